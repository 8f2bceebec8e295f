//! `Settings { server, redis, session }`, loaded in layers by the `config` crate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File};
use redis_client::RedisSettings;
use serde::Deserialize;
use session::SessionSettings;

/// Everything the app can be told: one section per crate, and `[store]`
/// for which store the app builds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerSettings,
    /// The Redis connection; see [`RedisSettings`].
    #[serde(default)]
    pub redis: RedisSettings,
    /// Where sessions are stored.
    #[serde(default)]
    pub store: StoreSettings,
    /// The session library's settings: timeouts, limits, the cookie; see
    /// [`SessionSettings`].
    #[serde(default)]
    pub session: SessionSettings,
}

/// Which session store the app builds, and its key layout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSettings {
    /// `"redis"` (shared by every node, the default) or `"memory"` (this
    /// process only).
    pub kind: StoreKind,
    /// Prefix of every session key in Redis. Default `"sid_"`, the NestJS
    /// design's layout, so that a Nest node and a Rust node share sessions.
    pub key_prefix: String,
    /// Prefix of each signed-in user's index keys. Default
    /// `"user_sessions:"`; never under `key_prefix` (a Nest node writes
    /// `<key_prefix><cookie>` for any cookie it is sent).
    pub user_index_prefix: String,
    /// Whether listing and revoking also read the user index where the
    /// previous version kept it (`<key_prefix>user:{<tag>}`), so that
    /// sessions signed in before an upgrade stay revocable. Default true;
    /// off once `session.absolute_timeout_secs` has passed since the last
    /// old node stopped.
    pub legacy_user_index: bool,
    /// Start even when Redis's `maxmemory-policy` can evict keys (every
    /// policy but `noeviction`): an evicted user index makes "sign out
    /// everywhere" miss live sessions. Default false: start-up refuses
    /// such a policy, naming this key; true starts with a warning.
    pub accept_eviction: bool,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::Redis,
            key_prefix: "sid_".to_owned(),
            user_index_prefix: "user_sessions:".to_owned(),
            legacy_user_index: true,
            accept_eviction: false,
        }
    }
}

/// Which [`session::SessionStore`] the app builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// [`session::RedisSessionStore`]: shared by every app node.
    #[default]
    Redis,
    /// [`session::MemorySessionStore`]: this process only; sessions are NOT
    /// shared between nodes.
    Memory,
}

/// Where and how the HTTP server listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to bind. Default `127.0.0.1`; `0.0.0.0` in a container.
    pub host: String,
    /// Port to bind; 0 picks a free one (tests do). Default 8080.
    pub port: u16,
    /// This node's name, sent on every response as `X-Served-By` (unless
    /// `served_by_header` is off) and shown on the demo page. Default: the
    /// host name.
    pub node_name: String,
    /// Send `X-Served-By: <node_name>` on every response. The two-node demo
    /// and its tests use it to show which node answered; a deployment that
    /// would rather not publish its node names turns it off. Default true.
    pub served_by_header: bool,
    /// Worker threads; 0 means one per CPU core. Default 0.
    pub workers: usize,
    /// On SIGTERM or SIGINT: stop accepting at once, then give in-flight
    /// requests this many seconds to finish before closing their
    /// connections. Default 30.
    pub shutdown_grace_secs: u64,
    /// Log one line per request to stderr (the access log, in actix
    /// `Logger`'s format, session ids shown only as a short hash), written
    /// by a thread of its own: see `access_log.rs`. `RUST_LOG` is read for
    /// it once, at start-up: a filter that hides `actix_web::middleware::logger`
    /// at `info` (`RUST_LOG=warn`) turns it off too. Default true.
    pub access_log: bool,
    /// Origins besides the request's own (`scheme://host[:port]`) whose
    /// pages may send state-changing requests (POST, DELETE) here: see
    /// `origin.rs`. Env: `APP__SERVER__ALLOWED_ORIGINS`, comma-separated.
    /// Default none.
    pub allowed_origins: Vec<String>,
    /// Where `GET /metrics` is served: `<ip>:<port>`, a listener of its own
    /// that serves nothing else, so that a load balancer fronting `port`
    /// never exposes the metrics to the public; empty for no metrics
    /// listener. Port 0 picks a free one (tests do). Default
    /// `127.0.0.1:9464`: scraped from the same host; a container binds
    /// `0.0.0.0:9464` and leaves the port unpublished.
    pub metrics_addr: String,
    /// The per-client limit on new sessions: see
    /// [`NewSessionLimitSettings`].
    pub new_session_limit: NewSessionLimitSettings,
    /// Addresses and CIDR blocks (`10.0.0.0/8`, `::1`) of the proxies in
    /// front of the app: only from them is `X-Forwarded-For` believed, and
    /// the client is its right-most address that is not one of them.
    /// Every other connection's client is its peer address, whatever it
    /// sends. Env: `APP__SERVER__TRUSTED_PROXIES`, comma-separated.
    /// Default none.
    pub trusted_proxies: Vec<String>,
}

/// `server.new_session_limit`: how many NEW sessions one client (an IPv4
/// address, an IPv6 /64) may create on this node. Requests on existing
/// sessions are never limited. Past it: 429 with `Retry-After`, nothing
/// written. `0` for either number turns the limit off
/// (`APP__SERVER__NEW_SESSION_LIMIT__PER_SECOND=0`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewSessionLimitSettings {
    /// New sessions a second, sustained, per client. Default 10; at most
    /// 1,000,000.
    pub per_second: u32,
    /// New sessions a client may create at once, before the sustained rate
    /// applies. Default 1000.
    pub burst: u32,
}

impl Default for NewSessionLimitSettings {
    fn default() -> Self {
        Self {
            per_second: 10,
            burst: 1000,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port: 8080,
            node_name: host_name(),
            served_by_header: true,
            workers: 0,
            shutdown_grace_secs: 30,
            access_log: true,
            allowed_origins: Vec::new(),
            metrics_addr: DEFAULT_METRICS_ADDR.to_owned(),
            new_session_limit: NewSessionLimitSettings::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `server.metrics_addr`'s default: this host only. 9464, the port
/// OpenTelemetry's Prometheus exporter registered, is clear of Prometheus
/// itself (9090) and of the node exporter (9100) on a shared host.
const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

impl ServerSettings {
    /// `metrics_addr` parsed: `None` for no metrics listener.
    ///
    /// # Errors
    ///
    /// [`SettingsError::Invalid`] naming `server.metrics_addr`.
    pub fn metrics_socket(&self) -> Result<Option<SocketAddr>, SettingsError> {
        if self.metrics_addr.is_empty() {
            return Ok(None);
        }
        self.metrics_addr.parse().map(Some).map_err(|_| {
            SettingsError::Invalid(format!(
                "server.metrics_addr must be <ip>:<port> (e.g. 127.0.0.1:9464), or empty for no metrics listener, got {:?}",
                self.metrics_addr
            ))
        })
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file could not be read or a value has the wrong type.
    #[error("invalid configuration: {source} (files in {dir}, then APP__SECTION__KEY variables)")]
    Load {
        /// The folder the files were read from.
        dir: String,
        /// The `config` crate's error; its text names the key.
        source: config::ConfigError,
    },
    /// A value has the right type but can never work.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads the layers, later wins:
    ///
    /// 1. `{dir}/default.toml` (required);
    /// 2. `{dir}/{APP_ENV}.toml`, if `APP_ENV` is set (then required);
    /// 3. environment variables `APP__SECTION__KEY`, e.g. `APP__SERVER__PORT=9000`
    ///    (`Environment::with_prefix("APP").separator("__")`, numbers and
    ///    booleans parsed).
    ///
    /// `{dir}` is `$APP_CONFIG_DIR`, else the workspace's `config/` folder.
    ///
    /// # Errors
    ///
    /// [`SettingsError`], whose message names the key at fault.
    pub fn load() -> Result<Self, SettingsError> {
        let dir = config_dir();
        let load_error = |source| SettingsError::Load {
            dir: dir.display().to_string(),
            source,
        };
        let mut builder =
            Config::builder().add_source(File::from(dir.join("default.toml")).required(true));
        if let Ok(environment) = std::env::var("APP_ENV") {
            builder = builder
                .add_source(File::from(dir.join(format!("{environment}.toml"))).required(true));
        }
        let settings: Self = builder
            .add_source(
                Environment::with_prefix("APP")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    // APP__REDIS__NODES=redis://a:7000,redis://b:7000
                    .list_separator(",")
                    .with_list_parse_key("redis.nodes")
                    .with_list_parse_key("redis.sentinels")
                    .with_list_parse_key("server.allowed_origins")
                    // APP__SERVER__TRUSTED_PROXIES=127.0.0.1,10.0.0.0/8
                    .with_list_parse_key("server.trusted_proxies")
                    // APP__SESSION__ENCRYPTION__KEYS=k2:...,k1:...
                    .with_list_parse_key("session.encryption.keys")
                    .with_list_parse_key("session.encryption.plaintext_fields")
                    .with_list_parse_key("session.cookie_signing_keys"),
            )
            .build()
            .and_then(Config::try_deserialize)
            .map_err(load_error)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every section for values that can never work.
    ///
    /// # Errors
    ///
    /// [`SettingsError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.redis
            .validate()
            .map_err(|error| SettingsError::Invalid(error.to_string()))?;
        self.session
            .validate()
            .map_err(|error| SettingsError::Invalid(error.to_string()))?;
        if self.store.kind == StoreKind::Redis {
            // Before any connection: a bad prefix stops start-up at once.
            session::RedisSessionStore::check_key_prefix(&self.store.key_prefix)
                .map_err(|error| SettingsError::Invalid(error.to_string()))?;
            session::RedisSessionStore::check_user_index_prefix(
                &self.store.user_index_prefix,
                &self.store.key_prefix,
            )
            .map_err(|error| SettingsError::Invalid(error.to_string()))?;
        }
        let visible_ascii = |c: char| c.is_ascii_graphic();
        if self.server.node_name.is_empty() || !self.server.node_name.chars().all(visible_ascii) {
            return Err(SettingsError::Invalid(format!(
                "server.node_name must be non-empty visible ASCII (it is sent as a header), got {:?}",
                self.server.node_name
            )));
        }
        if self.server.host.is_empty() {
            return Err(SettingsError::Invalid(
                "server.host must not be empty".to_owned(),
            ));
        }
        self.server.metrics_socket()?;
        for origin in &self.server.allowed_origins {
            if !crate::origin::is_origin(origin) {
                return Err(SettingsError::Invalid(format!(
                    "server.allowed_origins holds {origin:?}, which is not an origin: scheme://host[:port], lower-case, no path"
                )));
            }
        }
        let limit = &self.server.new_session_limit;
        if limit.per_second > crate::new_sessions::MAX_PER_SECOND {
            return Err(SettingsError::Invalid(format!(
                "server.new_session_limit.per_second must be at most {} (0 turns the limit off), got {}",
                crate::new_sessions::MAX_PER_SECOND,
                limit.per_second
            )));
        }
        crate::new_sessions::TrustedProxies::parse(&self.server.trusted_proxies)
            .map_err(SettingsError::Invalid)?;
        if self.session.absolute_timeout_secs == 0 {
            return Err(SettingsError::Invalid(
                "session.absolute_timeout_secs must be above 0: a signed-in user's index of sessions is bounded by it".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `$APP_CONFIG_DIR`, else `config/` at the workspace root. Never the current
/// directory: `cargo test` runs each crate from its own folder.
pub fn config_dir() -> PathBuf {
    match std::env::var_os("APP_CONFIG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
            dir.canonicalize().unwrap_or(dir)
        }
    }
}

/// The machine's host name (a container's is its id), or `unknown`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_node_name_is_the_host_name() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("Linux");
        assert_eq!(ServerSettings::default().node_name, kernel.trim());
    }

    #[test]
    fn the_config_folder_defaults_to_the_workspace_config() {
        assert!(
            config_dir().join("default.toml").is_file(),
            "{}",
            config_dir().display()
        );
    }

    #[test]
    fn the_metrics_address_is_an_ip_and_port_or_empty_for_none() {
        let mut server = ServerSettings::default();
        assert_eq!(
            server.metrics_socket().expect("the default"),
            Some(SocketAddr::from(([127, 0, 0, 1], 9464)))
        );
        server.metrics_addr = String::new();
        assert_eq!(server.metrics_socket().expect("off"), None);
        server.metrics_addr = "[::1]:0".to_owned();
        assert!(server.metrics_socket().expect("IPv6").is_some());
        for bad in [
            "9464",
            "localhost:9464",
            "127.0.0.1",
            "127.0.0.1:99999",
            " ",
        ] {
            server.metrics_addr = bad.to_owned();
            let message = server.metrics_socket().expect_err(bad).to_string();
            assert!(message.contains("server.metrics_addr"), "{message}");
        }
    }

    #[test]
    fn a_node_name_that_cannot_be_a_header_is_rejected() {
        let mut settings = Settings::default();
        settings.server.node_name = "node 1\n".to_owned();
        let message = settings.validate().expect_err("rejected").to_string();
        assert!(message.contains("server.node_name"), "{message}");
    }
}
