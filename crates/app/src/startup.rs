//! [`Application`]: bind, connect, build the services once, serve.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::middleware::{Condition, DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use redis_client::{RedisClientError, RedisService};
use session::{
    MemorySessionStore, RedisSessionStore, SessionMiddleware, SessionMiddlewareBuilder, StoreError,
};

use crate::access_log::{self, AccessLogMiddleware, AccessLogWriter};
use crate::new_sessions::{NewSessionLimit, TrustedProxies};
use crate::routes;
use crate::settings::{ServerSettings, Settings, SettingsError, StoreKind};
use crate::telemetry::{self, Telemetry};

/// Why the app could not start. Each message is one line that says what is
/// wrong and how to fix it; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The settings could not be loaded or make no sense.
    #[error(transparent)]
    Settings(#[from] SettingsError),

    /// The listening socket could not be opened.
    #[error("cannot listen on {address} ({source}): set APP__SERVER__HOST / APP__SERVER__PORT")]
    Bind {
        /// `host:port` as configured.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// Redis did not answer within `redis.startup_wait_ms`, or refused us.
    #[error(
        "cannot reach Redis at {url} ({reason}): start one with scripts/run.sh or set APP__REDIS__URL"
    )]
    RedisUnreachable {
        /// The URL, password hidden.
        url: String,
        /// A short cause such as `connection refused`.
        reason: String,
    },

    /// Redis answered, and refused this client: a wrong password, an
    /// unknown user, or an ACL that denies what the store needs.
    #[error(
        "Redis at {url} refuses this client ({reason}): check redis.username, redis.password and the ACL (see the README)"
    )]
    RedisRefused {
        /// The URL, password hidden.
        url: String,
        /// A short cause, never the password.
        reason: String,
    },

    /// The metrics listener could not be opened.
    #[error(
        "cannot listen for metrics on {address} ({source}): set APP__SERVER__METRICS_ADDR (server.metrics_addr; empty: no metrics listener)"
    )]
    MetricsBind {
        /// `ip:port` as configured.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },

    /// The HTTP server failed while running.
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),

    /// The access log's writer thread could not be started.
    #[error("cannot start the access log's writer thread ({0}): set APP__SERVER__ACCESS_LOG=false")]
    AccessLog(#[source] std::io::Error),
}

/// This node's name (`server.node_name`), shared with handlers that show it.
#[derive(Debug, Clone)]
pub struct NodeName(pub String);

/// A built server, bound and connected, ready to run.
pub struct Application {
    /// The port actually bound (differs from the setting when that is 0).
    port: u16,
    /// The actix server; runs when awaited.
    server: Server,
    /// The metrics listener's server and the port it bound; `None` when
    /// `server.metrics_addr` is empty. Runs beside `server`, and stops
    /// after it, so that metrics can be scraped during the grace period.
    metrics: Option<(Server, u16)>,
    /// The Redis client, to close its pool after the last request.
    redis: Option<RedisService>,
    /// The access log's writer thread, finished (every line written) after
    /// the last request; `None` when the access log is off.
    access_log: Option<AccessLogWriter>,
}

impl Application {
    /// Binds the listener first (so port 0 works in tests), then builds the
    /// store and the session service ONCE, waits for Redis, and prepares the
    /// server. Every worker gets a clone of the same `web::Data`.
    ///
    /// # Errors
    ///
    /// [`StartupError`], one line each.
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        Self::build_with_routes(settings, |_| {}).await
    }

    /// [`Application::build`], with more routes beside ours, behind the same
    /// middleware: how an app embeds this one, and how tests add a route
    /// that holds a request in flight.
    ///
    /// # Errors
    ///
    /// As [`Application::build`].
    pub async fn build_with_routes<F>(
        settings: Settings,
        extra_routes: F,
    ) -> Result<Self, StartupError>
    where
        F: Fn(&mut web::ServiceConfig) + Clone + Send + 'static,
    {
        settings.validate()?;
        let address = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&address).map_err(|source| StartupError::Bind {
            address: address.clone(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { address, source })?
            .port();
        // Bound as early, for the same reasons (port 0; a port in use stops
        // start-up before anything else is built).
        let metrics_listener = match settings.server.metrics_socket()? {
            Some(metrics_address) => {
                let bind_error = |source| StartupError::MetricsBind {
                    address: metrics_address.to_string(),
                    source,
                };
                let bound = TcpListener::bind(metrics_address).map_err(bind_error)?;
                let local = bound.local_addr().map_err(bind_error)?;
                Some((bound, local))
            }
            None => None,
        };

        telemetry::install_recorder(); // before the first Redis call
        let (builder, redis) = session_builder(&settings).await?;
        let builder = builder
            .settings(settings.session.clone())
            // The app's error shape for a failed commit too: one shape for
            // every error body.
            .on_commit_error(|error, _request| crate::error::session_failure_response(error));
        // Checked by `validate` above; parsed here for the limit.
        let proxies = TrustedProxies::parse(&settings.server.trusted_proxies)
            .map_err(|problem| StartupError::Settings(SettingsError::Invalid(problem)))?;
        let session_layer = with_new_session_limit(builder, &settings.server, proxies)
            .build()
            .map_err(|error| StartupError::Settings(SettingsError::Invalid(error.to_string())))?;
        // One service: the middleware and the handlers share its store.
        let sessions = web::Data::new(session_layer.service());
        // The store's scripts for this policy, so the first write of every
        // node is one round trip.
        sessions.prepare().await.map_err(|error| {
            let (url, reason) = (settings.redis.redacted_target(), short_reason(&error));
            match error {
                StoreError::Misconfigured(_) => StartupError::RedisRefused { url, reason },
                _ => StartupError::RedisUnreachable { url, reason },
            }
        })?;
        let telemetry = web::Data::new(Telemetry::new(redis.clone()));
        let metrics = match metrics_listener {
            Some((bound, local)) => {
                log::info!("metrics on http://{local}/metrics");
                let server = telemetry::metrics_server(bound, telemetry.clone())
                    .map_err(StartupError::Serve)?;
                Some((server, local.port()))
            }
            None => None,
        };
        // `server.access_log`, and `RUST_LOG` as it hid actix's `Logger`
        // (`RUST_LOG=warn` hides it), read once: the writer bypasses `log`.
        let access_log = if settings.server.access_log
            && log::log_enabled!(target: access_log::TARGET, log::Level::Info)
        {
            Some(AccessLogWriter::to_stderr().map_err(StartupError::AccessLog)?)
        } else {
            None
        };
        let access_log_handle = access_log.as_ref().map(AccessLogWriter::handle);
        let cookie_name = settings.session.cookie_name.clone();
        let node_name = settings.server.node_name.clone();
        let served_by_header = settings.server.served_by_header;
        let node = web::Data::new(NodeName(node_name.clone()));
        let origins = crate::origin::AllowedOrigins::new(settings.server.allowed_origins.clone());
        log::info!(
            "node {node_name} listening on http://{}:{port}",
            settings.server.host
        );

        let mut server = HttpServer::new(move || {
            App::new()
                // Lazy: a route that never extracts `Session` costs no Redis call.
                .wrap(session_layer.clone())
                // Outside the session layer: a refused request opens no session.
                .wrap(from_fn(crate::origin::refuse_cross_site))
                .wrap(Condition::new(
                    served_by_header,
                    DefaultHeaders::new().add(("X-Served-By", node_name.as_str())),
                ))
                // Outside the session layer: the time and status include the commit.
                .wrap(from_fn(telemetry::record_request))
                // Outermost: the time includes every other layer.
                .wrap(Condition::new(
                    access_log_handle.is_some(),
                    AccessLogMiddleware::new(access_log_handle.clone(), &cookie_name),
                ))
                .app_data(sessions.clone())
                .app_data(node.clone())
                .app_data(origins.clone())
                .app_data(telemetry.clone())
                .configure(routes::configure)
                .configure(extra_routes.clone())
        })
        // SIGTERM / SIGINT: stop accepting at once, let in-flight requests
        // finish within the grace period.
        .shutdown_timeout(settings.server.shutdown_grace_secs)
        .listen(listener)
        .map_err(StartupError::Serve)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Self {
            port,
            server: server.run(),
            metrics,
            redis,
            access_log,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port the metrics listener bound, if `server.metrics_addr` asks
    /// for one (differs from the setting when that says port 0).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, port)| *port)
    }

    /// Serves until the process gets SIGINT or SIGTERM. Then it stops
    /// accepting connections at once, lets in-flight requests finish within
    /// `server.shutdown_grace_secs`, closes the Redis pool, and writes out
    /// every access log line still queued.
    ///
    /// # Errors
    ///
    /// [`StartupError::Serve`] if the server fails.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        // The metrics listener handles no signal of its own: it serves until
        // the main server is done, in-flight requests included.
        let metrics = self.metrics.map(|(server, _)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let served = self.server.await.map_err(StartupError::Serve);
        if let Some((handle, running)) = metrics {
            handle.stop(true).await;
            // It ends once stopped; a failure of its own changes nothing now.
            let _ = running.await;
        }
        if let Some(redis) = &self.redis {
            redis.close();
        }
        if let Some(access_log) = self.access_log {
            // The workers are gone: no line comes after these.
            access_log.finish();
        }
        log::info!("stopped: in-flight requests done, Redis pool closed");
        served
    }
}

/// The client's own short cause (`connection refused`, `authentication
/// failed: ...`) for the one start-up line, else the whole chain.
fn short_reason(error: &StoreError) -> String {
    let client = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<RedisClientError>());
    match client {
        Some(
            RedisClientError::Unavailable { reason, .. }
            | RedisClientError::Misconfigured { reason, .. },
        ) => reason.clone(),
        Some(other) => other.to_string(),
        None => crate::error::cause_chain(error),
    }
}

/// `builder` with the per-client limit on new sessions, unless
/// `server.new_session_limit` turns it off.
fn with_new_session_limit(
    builder: SessionMiddlewareBuilder,
    server: &ServerSettings,
    proxies: TrustedProxies,
) -> SessionMiddlewareBuilder {
    let trusted = proxies.len();
    let Some(limit) = NewSessionLimit::new(&server.new_session_limit, proxies) else {
        log::info!(
            "new sessions are not limited (server.new_session_limit has a 0){}",
            if trusted > 0 {
                "; server.trusted_proxies is unused"
            } else {
                ""
            }
        );
        return builder;
    };
    log::info!(
        "new sessions: at most {} a second per client, in bursts of {}, on this node; \
         X-Forwarded-For read from {trusted} trusted proxy entries",
        server.new_session_limit.per_second,
        server.new_session_limit.burst
    );
    builder.new_session_gate(limit)
}

/// The middleware's builder over the store `store.kind` asks for; for
/// Redis, only once Redis answers and the script is loaded, with its client
/// for metrics and shutdown.
async fn session_builder(
    settings: &Settings,
) -> Result<(SessionMiddlewareBuilder, Option<RedisService>), StartupError> {
    match settings.store.kind {
        StoreKind::Memory => {
            log::warn!(
                "store.kind = \"memory\": sessions live in this process and are NOT shared between nodes"
            );
            Ok((SessionMiddleware::builder(MemorySessionStore::new()), None))
        }
        StoreKind::Redis => {
            let unreachable = |error: StoreError| {
                let (url, reason) = (settings.redis.redacted_target(), short_reason(&error));
                match error {
                    StoreError::Misconfigured(_) => StartupError::RedisRefused { url, reason },
                    _ => StartupError::RedisUnreachable { url, reason },
                }
            };
            let invalid = |error: session::ConfigError| {
                StartupError::Settings(SettingsError::Invalid(error.to_string()))
            };
            let mut store = RedisSessionStore::connect(&settings.redis)
                .await
                .map_err(unreachable)?
                .with_key_prefix(settings.store.key_prefix.clone())
                .map_err(invalid)?
                .with_user_index_prefix(settings.store.user_index_prefix.clone())
                .map_err(invalid)?
                .with_legacy_user_index(settings.store.legacy_user_index);
            if settings.session.hash_ids {
                store = store
                    .with_hashed_ids(settings.session.accept_raw_keys)
                    .map_err(invalid)?;
                log::info!("session ids are hashed at rest");
            }
            check_eviction_policy(store.redis(), settings.store.accept_eviction)
                .await
                .map_err(|error| match error {
                    EvictionCheck::Unavailable(error) => unreachable(error.into()),
                    EvictionCheck::Evicting(message) => {
                        StartupError::Settings(SettingsError::Invalid(message))
                    }
                })?;
            log::info!("sessions in Redis at {}", store.redis().redacted_url());
            let redis = store.redis().clone();
            Ok((SessionMiddleware::builder(store), Some(redis)))
        }
    }
}

/// Why [`check_eviction_policy`] stops start-up.
enum EvictionCheck {
    /// Redis did not answer.
    Unavailable(redis_client::RedisClientError),
    /// A policy that can evict the user index, not accepted: the line to print.
    Evicting(String),
}

/// Reads Redis's `maxmemory-policy`. Every policy but `noeviction` can
/// evict a user's index keys (they always carry a TTL, so `volatile-*`
/// ones too), and an evicted index makes "sign out everywhere" miss live
/// sessions. Such a policy stops start-up unless `accept_eviction` says
/// the operator takes that risk (then a warning). Where `CONFIG` is denied
/// or renamed, as on managed offerings, it warns and goes on.
async fn check_eviction_policy(
    redis: &redis_client::RedisService,
    accept_eviction: bool,
) -> Result<(), EvictionCheck> {
    use redis_client::RedisClientError;
    let policy = match redis.config_get("maxmemory-policy").await {
        Ok(Some(policy)) => policy,
        Ok(None) => return Ok(()),
        Err(error @ RedisClientError::Unavailable { .. }) => {
            return Err(EvictionCheck::Unavailable(error));
        }
        Err(error) => {
            log::warn!(
                "could not read Redis's maxmemory-policy ({}): make sure it is \
                 noeviction, or an evicted user index will let sessions outlive \
                 \"sign out everywhere\"",
                session::log_text::Escaped(&error)
            );
            return Ok(());
        }
    };
    if policy == "noeviction" {
        return Ok(());
    }
    if accept_eviction {
        log::warn!(
            "Redis's maxmemory-policy is {policy}: under memory pressure it can evict a \
             user's index, and \"sign out everywhere\" then misses that user's sessions \
             (store.accept_eviction = true takes that risk)"
        );
        return Ok(());
    }
    Err(EvictionCheck::Evicting(format!(
        "store.accept_eviction is false, and Redis's maxmemory-policy is {policy:?}, which can \
         evict user index keys (\"sign out everywhere\" would then miss live sessions): set \
         maxmemory-policy noeviction, or set store.accept_eviction = true to take the risk"
    )))
}
