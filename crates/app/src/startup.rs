//! [`Application`]: bind, connect, build the services once, serve.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::DefaultHeaders;
use actix_web::{App, HttpServer, web};
use redis_client::{RedisClientError, RedisService};
use session::{
    MemorySessionStore, RedisSessionStore, SessionMiddleware, SessionService, SessionStore,
    StoreKind,
};

use crate::routes;
use crate::settings::{Settings, SettingsError};

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

    /// Redis did not answer within `redis.startup_wait_ms`.
    #[error(
        "cannot reach Redis at {url} ({reason}): start one with scripts/run.sh or set APP__REDIS__URL"
    )]
    RedisUnreachable {
        /// The URL, password hidden.
        url: String,
        /// A short cause such as `connection refused`.
        reason: String,
    },

    /// The HTTP server failed while running.
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
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

        let store = build_store(&settings).await?;
        let session_layer = SessionMiddleware::new(SessionService::new(
            Arc::clone(&store),
            settings.session.clone(),
        ));
        let sessions = web::Data::new(SessionService::new(store, settings.session.clone()));
        let node_name = settings.server.node_name.clone();
        let node = web::Data::new(NodeName(node_name.clone()));
        log::info!(
            "node {node_name} listening on http://{}:{port}",
            settings.server.host
        );

        let mut server = HttpServer::new(move || {
            App::new()
                // Lazy: a route that never extracts `Session` costs no Redis call.
                .wrap(session_layer.clone())
                .wrap(DefaultHeaders::new().add(("X-Served-By", node_name.as_str())))
                .app_data(sessions.clone())
                .app_data(node.clone())
                .configure(routes::configure)
                .configure(extra_routes.clone())
        })
        .listen(listener)
        .map_err(StartupError::Serve)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the process gets SIGINT or SIGTERM, then drains in-flight
    /// requests.
    ///
    /// # Errors
    ///
    /// [`StartupError::Serve`] if the server fails.
    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        self.server.await.map_err(StartupError::Serve)
    }
}

/// The store `session.store` asks for; for Redis, only once Redis answers.
async fn build_store(settings: &Settings) -> Result<Arc<dyn SessionStore>, StartupError> {
    match settings.session.store {
        StoreKind::Memory => {
            log::warn!(
                "session.store = \"memory\": sessions live in this process and are NOT shared between nodes"
            );
            Ok(Arc::new(MemorySessionStore::new()))
        }
        StoreKind::Redis => {
            let redis = RedisService::new(&settings.redis).map_err(|error| {
                StartupError::Settings(SettingsError::Invalid(error.to_string()))
            })?;
            let max_wait = Duration::from_millis(settings.redis.startup_wait_ms);
            redis.wait_until_ready(max_wait).await.map_err(|error| {
                let reason = match &error {
                    RedisClientError::Unavailable { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                StartupError::RedisUnreachable {
                    url: redis.redacted_url().to_owned(),
                    reason,
                }
            })?;
            log::info!("sessions in Redis at {}", redis.redacted_url());
            let url = redis.redacted_url().to_owned();
            let store = RedisSessionStore::new(redis, settings.session.key_prefix.clone());
            // Load the script now, so that the first request costs one round trip.
            store
                .prepare()
                .await
                .map_err(|error| StartupError::RedisUnreachable {
                    url,
                    reason: crate::error::cause_chain(&error),
                })?;
            Ok(Arc::new(store))
        }
    }
}
