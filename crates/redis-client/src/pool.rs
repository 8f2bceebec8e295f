//! Our deadpool manager for multiplexed Redis connections.
//!
//! Connections are SHARED and PER THREAD. Each thread that talks to Redis
//! (an actix worker, say) leases one connection from the pool, opened on that
//! thread, and keeps it; every request on the thread uses a handle to it
//! ([`SharedConnection`]). Many requests' commands then travel on one
//! connection, pipelined by redis-rs, so Redis and the app make one `read`
//! and one `write` for a batch of requests instead of one each; and the
//! connection's driver task runs on the same thread as the requests, so no
//! request wakes another thread. The pool still opens, checks and replaces the
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster::ClusterClient;
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, ClientTlsConfig, Cmd, ConnectionInfo, IntoConnectionInfo,
    Pipeline, ProtocolVersion, RedisError, RedisFuture, TlsCertificates, TlsMode, Value,
};

use crate::sentinel_watch::FailoverState;
use crate::settings::{RedisMode, redact_url};
use crate::{RedisClientError, RedisSettings};

/// The pool of connections, as handed around inside a [`crate::RedisService`].
pub(crate) type Pool = managed::Pool<ConnectionManager>;

/// Opens connections with the configured timeouts and recycles them cheaply.
pub(crate) struct ConnectionManager {
    /// Where connections go: parsed once from the settings.
    backend: Backend,
    /// Sentinel mode: what the watchers learned of failovers. A connection
    /// opened before the last `+switch-master` is never handed out again.
    failover: Option<Arc<FailoverState>>,
    /// Idle time after which a connection is PINGed before reuse.
    idle_check_after: Duration,
    /// `redis.connect_timeout_ms`: the whole budget of one `create`.
    connect_timeout: Duration,
}

/// A standalone server or a cluster.
enum Backend {
    Standalone {
        /// RESP3, for redis-rs's disconnection notice (`flag_disconnect`).
        client: Client,
        /// RESP2, for a server or proxy that knows no `HELLO` (Redis 5, some
        /// proxies): it works as before, without the notice.
        resp2: Client,
        /// Set once `HELLO` was refused: every later connection is RESP2.
        without_hello: AtomicBool,
        /// Connect and response timeouts applied to every new connection.
        config: AsyncConnectionConfig,
    },
    Cluster(ClusterClient),
    /// New master connections go straight to the address the watchers
    /// last heard announced (see `sentinel_watch.rs`), and otherwise ask
    /// the Sentinels through `SentinelClient`, which needs `&mut`, hence
    /// the lock (held only while one connection opens).
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        config: AsyncConnectionConfig,
        /// For connecting to an announced address: the same credentials
        /// and TLS as the Sentinel-found servers get.
        direct: DirectTarget,
        role: Role,
    },
}

/// How to reach a server of the Sentinel group by its `ip:port`.
struct DirectTarget {
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    certificates: Option<TlsCertificates>,
}

impl DirectTarget {
    fn client(&self, address: &str) -> Result<Client, RedisError> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let info = format!("{scheme}://{address}").into_connection_info()?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        let info = info.set_redis_settings(redis.set_protocol(ProtocolVersion::RESP3));
        match &self.certificates {
            Some(certificates) => Client::build_with_tls(info, certificates.clone()),
            None => Client::open(info),
        }
    }
}

/// Which server of a Sentinel-watched group a pool's connections go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Master,
    /// A replica, for `redis.read_from_replicas`.
    Replica,
}

impl ConnectionManager {
    fn new(
        settings: &RedisSettings,
        role: Role,
        failover: Option<Arc<FailoverState>>,
    ) -> Result<Self, RedisClientError> {
        let certificates = tls_certificates(settings)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout()))
            .set_response_timeout(Some(settings.response_timeout()));
        let backend = match settings.mode {
            RedisMode::Standalone => {
                let info = connection_info(&settings.url, settings)?;
                let open = |info: ConnectionInfo| {
                    match certificates.clone() {
                        Some(certificates) => Client::build_with_tls(info, certificates),
                        None => Client::open(info),
                    }
                    .map_err(|error| invalid_url("redis.url", &settings.url, &error))
                };
                let resp3 = info
                    .redis_settings()
                    .clone()
                    .set_protocol(ProtocolVersion::RESP3);
                Backend::Standalone {
                    client: open(info.clone().set_redis_settings(resp3))?,
                    resp2: open(info)?,
                    without_hello: AtomicBool::new(false),
                    config,
                }
            }
            RedisMode::Cluster => {
                let nodes = settings
                    .nodes
                    .iter()
                    .map(|node| connection_info(node.trim(), settings))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = ClusterClient::builder(nodes)
                    .connection_timeout(settings.connect_timeout())
                    .response_timeout(settings.response_timeout());
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                let client = builder.build().map_err(|error| {
                    RedisClientError::InvalidSettings(format!(
                        "redis.nodes cannot make a cluster client ({}: {})",
                        error.category(),
                        error.detail().unwrap_or_default()
                    ))
                })?;
                Backend::Cluster(client)
            }
            RedisMode::Sentinel => Backend::Sentinel {
                client: tokio::sync::Mutex::new(sentinel_client(
                    settings,
                    certificates.clone(),
                    role,
                )?),
                config,
                direct: DirectTarget {
                    username: settings.username.clone(),
                    password: settings.password.clone(),
                    tls: settings.uses_tls(),
                    certificates: certificates.filter(|_| settings.uses_tls()),
                },
                role,
            },
        };
        Ok(Self {
            backend,
            failover,
            idle_check_after: Duration::from_millis(settings.idle_check_after_ms),
            connect_timeout: settings.connect_timeout(),
        })
    }
}

/// The Sentinels are reached as their URLs say (credentials included); the
/// master and replicas with `redis.username` / `redis.password`. TLS, and
/// the `redis.tls` files, apply to both when the Sentinel URLs are
/// `rediss://`: Redis's own TLS setups encrypt every link or none.
fn sentinel_client(
    settings: &RedisSettings,
    certificates: Option<TlsCertificates>,
    role: Role,
) -> Result<SentinelClient, RedisClientError> {
    let sentinels = settings
        .sentinels
        .iter()
        .map(|node| {
            node.trim()
                .into_connection_info()
                .map_err(|error| invalid_url("redis.sentinels", node, &error))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let server_type = match role {
        Role::Master => SentinelServerType::Master,
        Role::Replica => SentinelServerType::Replica,
    };
    let mut builder = SentinelClientBuilder::new(
        sentinels.iter().map(|info| info.addr().clone()),
        &settings.master_name,
        server_type,
    )
    .map_err(|error| sentinel_error(&error))?;
    if let Some(credentials) = sentinels.iter().map(ConnectionInfo::redis_settings).next() {
        if let Some(username) = credentials.username() {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = credentials.password() {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    // RESP3, for the disconnection notice (see `flag_disconnect`).
    builder = builder.set_client_to_redis_protocol(ProtocolVersion::RESP3);
    if let Some(username) = &settings.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &settings.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if settings.uses_tls() {
        builder = builder
            .set_client_to_sentinel_tls_mode(TlsMode::Secure)
            .set_client_to_redis_tls_mode(TlsMode::Secure);
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_sentinel_certificates(certificates.clone())
                .set_client_to_redis_certificates(certificates);
        }
    }
    builder.build().map_err(|error| sentinel_error(&error))
}

fn sentinel_error(error: &RedisError) -> RedisClientError {
    RedisClientError::InvalidSettings(format!(
        "redis.sentinels cannot make a sentinel client ({}: {})",
        error.category(),
        error.detail().unwrap_or_default()
    ))
}

/// The `redis.tls` files, read and parsed now so that a missing or broken
/// file stops start-up with one line naming the key (never the contents).
/// `None` when no file is set: `rediss://` then trusts the system's CAs.
pub(crate) fn tls_certificates(
    settings: &RedisSettings,
) -> Result<Option<TlsCertificates>, RedisClientError> {
    let tls = &settings.tls;
    if !tls.is_set() {
        return Ok(None);
    }
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|error| {
            RedisClientError::InvalidSettings(format!(
                "{key} cannot be read ({}): {error}",
                path.display()
            ))
        })
    };
    let root_cert = tls
        .ca_file
        .as_deref()
        .map(|path| read("redis.tls.ca_file", path))
        .transpose()?;
    let client_tls = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("redis.tls.cert_file", cert)?,
            client_key: read("redis.tls.key_file", key)?,
        }),
        _ => None,
    };
    let certificates = TlsCertificates {
        client_tls,
        root_cert,
    };
    // Parse once here: the client builders would report a bad PEM only on
    // the first connection, as if the server were down.
    if let Some(root_cert) = &certificates.root_cert {
        check_pem(root_cert, "redis.tls.ca_file", "CERTIFICATE")?;
    }
    if let Some(client) = &certificates.client_tls {
        check_pem(&client.client_cert, "redis.tls.cert_file", "CERTIFICATE")?;
        check_pem(&client.client_key, "redis.tls.key_file", "PRIVATE KEY")?;
    }
    Ok(Some(certificates))
}

/// Whether `bytes` hold at least one PEM block of `label`; the message
/// never quotes the file (a key file is a secret).
fn check_pem(bytes: &[u8], key: &str, label: &str) -> Result<(), RedisClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let found = if label == "CERTIFICATE" {
        matches!(CertificateDer::pem_slice_iter(bytes).next(), Some(Ok(_)))
    } else {
        PrivateKeyDer::from_pem_slice(bytes).is_ok()
    };
    if found {
        Ok(())
    } else {
        Err(RedisClientError::InvalidSettings(format!(
            "{key} holds no PEM {label}"
        )))
    }
}

/// `url` parsed, with `redis.username` / `redis.password` applied over any
/// credentials in it.
fn connection_info(
    url: &str,
    settings: &RedisSettings,
) -> Result<ConnectionInfo, RedisClientError> {
    let (key, _) = settings.target_urls();
    let info = url
        .into_connection_info()
        .map_err(|error| invalid_url(key, url, &error))?;
    let mut redis = info.redis_settings().clone();
    if let Some(username) = &settings.username {
        redis = redis.set_username(username);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password);
    }
    Ok(info.set_redis_settings(redis))
}

/// The parse error may quote the URL: never let it carry the password.
fn invalid_url(key: &str, url: &str, error: &RedisError) -> RedisClientError {
    RedisClientError::InvalidSettings(format!(
        "{key} is not a valid Redis URL ({}): {}",
        error.category(),
        redact_url(url)
    ))
}

/// A connection to a standalone server or to a cluster: both multiplexed,
/// both cheap to clone.
#[derive(Clone)]
pub(crate) enum Connection {
    Standalone(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// One multiplexed connection, shared by every request that holds a clone,
/// and whether one of them saw it fail.
#[derive(Clone)]
pub(crate) struct SharedConnection {
    pub(crate) connection: Connection,
    broken: Arc<AtomicBool>,
    /// When a reply last came back on it, in ms since [`CLOCK_START`]: a
    /// connection leased to a thread never goes back to the pool, so the
    /// pool's own idle check never sees it, and this is how the lease knows
    /// to PING it first (see `Lane::connection`).
    last_used_ms: Arc<AtomicU64>,
    /// The thread whose runtime runs the connection's driver task.
    pub(crate) opened_on: ThreadId,
    /// The failover generation it was opened in (see `sentinel_watch.rs`),
    /// and where to read the current one; `None` outside Sentinel mode.
    generation: Option<(u64, Arc<FailoverState>)>,
}

/// The origin of [`SharedConnection`]'s idle clock.
static CLOCK_START: LazyLock<Instant> = LazyLock::new(Instant::now);

fn clock_ms(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(*CLOCK_START).as_millis()).unwrap_or(u64::MAX)
}

impl SharedConnection {
    /// Broken by a failed command, or opened before the Sentinels switched
    /// the master: either way it must not carry another call.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
            || self
                .generation
                .as_ref()
                .is_some_and(|(opened, state)| *opened != state.generation())
    }

    /// A reply arrived on it at about `at`.
    pub(crate) fn touch(&self, at: Instant) {
        self.last_used_ms.store(clock_ms(at), Ordering::Relaxed);
    }

    /// How long no reply has arrived on it.
    pub(crate) fn idle_for(&self, now: Instant) -> Duration {
        let last = self.last_used_ms.load(Ordering::Relaxed);
        Duration::from_millis(clock_ms(now).saturating_sub(last))
    }

    /// A command on this connection failed in a way that leaves it unusable
    /// (I/O, timeout): the pool replaces it at its next checkout.
    pub(crate) fn mark_broken(&self) {
        self.broken.store(true, Ordering::Relaxed);
    }
}

impl ConnectionManager {
    /// A connection to the group's master (or a replica), whose role is
    /// checked with `ROLE` on that very connection: a Sentinel that has not
    /// heard of a switch yet still names the old master, and the old master
    /// calls itself master until the Sentinels reconfigure it, seconds
    /// later. So the master goes first to the address the watchers heard
    /// announced, and asks the Sentinels only when there is none, or it
    /// does not answer as master (all watchers missed a switch).
    async fn open_in_sentinel_group(
        &self,
        client: &tokio::sync::Mutex<SentinelClient>,
        config: &AsyncConnectionConfig,
        direct: &DirectTarget,
        role: Role,
    ) -> Result<(MultiplexedConnection, Arc<AtomicBool>), RedisError> {
        let announced = match role {
            Role::Master => self
                .failover
                .as_ref()
                .and_then(|state| state.master_address()),
            Role::Replica => None,
        };
        if let Some(address) = announced {
            let opened = async {
                let (config, broken) = flag_disconnect(config);
                let mut connection = direct
                    .client(&address)?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                check_role(&mut connection, role).await?;
                Ok::<_, RedisError>((connection, broken))
            };
            // Half the connect budget at most: an announced address that
            // does not answer must leave time to ask the Sentinels.
            let opened = tokio::time::timeout(self.connect_timeout / 2, opened);
            match opened.await.unwrap_or_else(|_| Err(timed_out())) {
                Ok(connection) => return Ok(connection),
                Err(error) => {
                    log::debug!(
                        "the announced master {address} will not do ({error}); asking the Sentinels"
                    );
                }
            }
        }
        let (config, broken) = flag_disconnect(config);
        let mut connection = client
            .lock()
            .await
            .get_async_connection_with_config(&config)
            .await?;
        check_role(&mut connection, role).await?;
        Ok((connection, broken))
    }
}

/// `HELLO` answered "unknown command": a server before Redis 6, or a proxy.
fn refuses_hello(error: &RedisError) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    text.contains("unknown command") && text.contains("hello")
}

/// `config` for ONE new connection, with redis-rs's disconnection notice
/// wired to the flag returned: set once the server has closed it. redis-rs
/// gives the notice only on RESP3 connections, so standalone and Sentinel
/// connections speak RESP3 (`HELLO 3`, which ACLs always allow; Redis 6 or
/// later; a standalone server without HELLO gets RESP2). The cluster client
/// reconnects by itself and keeps RESP2.
fn flag_disconnect(config: &AsyncConnectionConfig) -> (AsyncConnectionConfig, Arc<AtomicBool>) {
    let broken = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&broken);
    let config = config
        .clone()
        .set_push_sender(move |info: redis::PushInfo| {
            if info.kind == redis::PushKind::Disconnection {
                flag.store(true, Ordering::Relaxed);
            }
            Ok::<(), std::convert::Infallible>(())
        });
    (config, broken)
}

/// `ROLE` on `connection`: an error unless the server has `role`. Not
/// being master is reported as `READONLY`, which it is: Redis would refuse
/// the write, and sending it again on another connection is safe.
async fn check_role(connection: &mut MultiplexedConnection, role: Role) -> Result<(), RedisError> {
    let answer: redis::Role = redis::cmd("ROLE").query_async(connection).await?;
    let fits = match role {
        Role::Master => matches!(answer, redis::Role::Primary { .. }),
        Role::Replica => matches!(answer, redis::Role::Replica { .. }),
    };
    if fits {
        Ok(())
    } else {
        // READONLY for a master that is not one: the write was not sent,
        // and a retry on another connection is safe. (The replica lane
        // reads only, and falls back to the master on any error.)
        Err(RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            match role {
                Role::Master => "the announced master answers ROLE as a replica",
                Role::Replica => "the replica the Sentinels named answers ROLE as a master",
            },
        )))
    }
}

fn timed_out() -> RedisError {
    RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
}

impl managed::Manager for ConnectionManager {
    type Type = SharedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<SharedConnection, RedisError> {
        // Read before connecting: a switch while this connects makes it stale.
        let generation = self
            .failover
            .as_ref()
            .map(|state| (state.generation(), Arc::clone(state)));
        // Set by the connection's driver task the moment the server closes
        // it (CLIENT KILL, a restart, timeout): a thread's leased connection
        // may sit unused then, and the next request on it would fail,
        // unretried if it was a write. See `flag_disconnect`.
        let (connection, broken) = match &self.backend {
            Backend::Standalone {
                client,
                resp2,
                without_hello,
                config,
            } => {
                let unflagged = || Arc::new(AtomicBool::new(false));
                if without_hello.load(Ordering::Relaxed) {
                    let connection = resp2
                        .get_multiplexed_async_connection_with_config(config)
                        .await?;
                    (Connection::Standalone(connection), unflagged())
                } else {
                    let (flagged, broken) = flag_disconnect(config);
                    match client
                        .get_multiplexed_async_connection_with_config(&flagged)
                        .await
                    {
                        Ok(connection) => (Connection::Standalone(connection), broken),
                        Err(error) if refuses_hello(&error) => {
                            log::warn!(
                                "the Redis server knows no HELLO (RESP3): using RESP2, so a connection the server closes is noticed only when a call fails on it"
                            );
                            without_hello.store(true, Ordering::Relaxed);
                            let connection = resp2
                                .get_multiplexed_async_connection_with_config(config)
                                .await?;
                            (Connection::Standalone(connection), unflagged())
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
            // The cluster client reconnects to its nodes by itself.
            Backend::Cluster(client) => (
                Connection::Cluster(client.get_async_connection().await?),
                Arc::new(AtomicBool::new(false)),
            ),
            Backend::Sentinel {
                client,
                config,
                direct,
                role,
            } => {
                let (connection, broken) = self
                    .open_in_sentinel_group(client, config, direct, *role)
                    .await?;
                (Connection::Standalone(connection), broken)
            }
        };
        Ok(SharedConnection {
            connection,
            broken,
            last_used_ms: Arc::new(AtomicU64::new(clock_ms(Instant::now()))),
            opened_on: std::thread::current().id(),
            generation,
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
pub(crate) fn build_pool(
    settings: &RedisSettings,
    role: Role,
    failover: Option<Arc<FailoverState>>,
    max_size: usize,
) -> Result<Pool, RedisClientError> {
    install_crypto_provider();
    let manager = ConnectionManager::new(settings, role, failover)?;
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(settings.wait_timeout()))
        .create_timeout(Some(settings.connect_timeout()))
        .recycle_timeout(Some(settings.response_timeout()))
        .build()
        .map_err(|error| {
            RedisClientError::InvalidSettings(format!("cannot build the Redis pool: {error}"))
        })
}

/// rustls needs one process-wide crypto provider; redis-rs enables none.
/// Ours is `ring`, unless the application installed one first.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only if another thread installed one meanwhile: fine too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
