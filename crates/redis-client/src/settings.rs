//! Typed settings for the Redis connection pool.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::RedisClientError;

/// Which kind of Redis deployment to talk to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server (or a proxy in front of several) at `redis.url`. The default.
    #[default]
    Standalone,
    /// Redis Cluster, discovered from the seed nodes in `redis.nodes`. The
    /// client follows `MOVED` / `ASK` redirects and topology changes.
    Cluster,
    /// A master found through the Sentinels in `redis.sentinels` under
    /// `redis.master_name`; after a failover, the next connection goes to
    /// the new master. Reads go to the master too (no stale reads).
    Sentinel,
}

/// How to reach Redis and how long to wait for it.
///
/// Loaded by the app from the `[redis]` section of `config/*.toml` or from
/// `APP__REDIS__*` environment variables. Times are plain milliseconds so that
/// one environment variable sets one value.
///
/// The timeouts bound every wait of an operation, however Redis misbehaves;
/// the crate docs' "Timeouts" add up what one call can take (a reply within
/// `response_timeout_ms` in the usual case). The session layer bounds a
/// whole request on top (`session.store_timeout_ms`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `"standalone"` (default), `"cluster"` or `"sentinel"`.
    pub mode: RedisMode,
    /// Standalone: `redis://[[user]:password@]host:port[/db]`. Default
    /// `redis://127.0.0.1:6379`.
    ///
    /// The password, if any, is never logged: see [`RedisSettings::redacted_url`].
    pub url: String,
    /// Cluster: seed nodes, `redis://host:port` each; any live one is enough
    /// to discover the rest. From the environment, comma-separated:
    /// `APP__REDIS__NODES=redis://127.0.0.1:7000,redis://127.0.0.1:7001`.
    pub nodes: Vec<String>,
    /// Sentinel: the Sentinels' addresses, `redis://host:port` each; from the
    /// environment, comma-separated like `redis.nodes`.
    pub sentinels: Vec<String>,
    /// Sentinel: the name the Sentinels monitor the master under.
    pub master_name: String,
    /// ACL user name, kept out of URLs. Overrides one given in a URL.
    pub username: Option<String>,
    /// Password (or ACL password), kept out of URLs and never logged.
    /// Overrides one given in a URL.
    pub password: Option<String>,
    /// TLS files, for `rediss://` targets. See [`TlsSettings`].
    pub tls: TlsSettings,
    /// Sentinel: send session loads (`HGETALL` + `PTTL`) to a replica, and
    /// fall back to the master when the replica does not have the session.
    /// Off by default. A replica lags its master (usually by well under a
    /// millisecond, by seconds or more while a link is broken): a load can
    /// see a session as it was before the last writes. Writes, and the
    /// guards they carry (alive, absolute lifetime, counters, CAS), always
    /// run on the master, so staleness never loses or resurrects data; it
    /// can only show a read-only route older values. A load whose answer
    /// authorises acting for a user (the session layer's `Session::user`
    /// and `Session::handle`, before listing or revoking sessions) reads
    /// the master, so that a replica that missed a logout cannot vouch for
    /// the logged-out cookie.
    pub read_from_replicas: bool,
    /// Most connections the pool keeps open. Default 16. On Sentinel and
    /// Cluster, durable writes (logouts, logins) have a pool of their own of
    /// half as many (at least 1), since their `WAIT` blocks a connection.
    pub pool_max_size: usize,
    /// How long a request may wait for a free pooled connection. Default 500.
    pub wait_timeout_ms: u64,
    /// How long opening a new TCP connection may take. Default 500.
    pub connect_timeout_ms: u64,
    /// How long Redis may take to answer one command. Default 1000.
    pub response_timeout_ms: u64,
    /// A connection idle for longer than this is checked with a PING before
    /// a call rides it: a pooled one when it is handed out again, a thread's
    /// leased one before its next call. Busy connections are not: that
    /// would cost a round trip per request. 0 PINGs before every call (two
    /// round trips each). Default 10000.
    pub idle_check_after_ms: u64,
    /// At start-up, how long to keep trying before giving up on an
    /// unreachable Redis. Default 5000.
    pub startup_wait_ms: u64,
    /// On Sentinel and Cluster: how long a security-relevant write (a
    /// logout's delete, a login's renewal) waits for a replica to confirm
    /// it (`WAIT 1 <ms>`), so that a failover cannot undo it. Unconfirmed,
    /// the write is reported unavailable (503). 0 never waits. At most
    /// 10000. Ignored on a single server, which has no failover. Default 500.
    pub durable_write_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            mode: RedisMode::Standalone,
            url: "redis://127.0.0.1:6379".to_owned(),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            master_name: String::new(),
            username: None,
            password: None,
            tls: TlsSettings::default(),
            read_from_replicas: false,
            pool_max_size: 16,
            wait_timeout_ms: 500,
            connect_timeout_ms: 500,
            response_timeout_ms: 1000,
            idle_check_after_ms: 10_000,
            startup_wait_ms: 5000,
            durable_write_timeout_ms: 500,
        }
    }
}

/// TLS files (PEM), under `[redis.tls]` or `APP__REDIS__TLS__*`.
///
/// TLS itself is switched on by the scheme: `rediss://` in `redis.url`, in
/// every `redis.nodes` entry (cluster), or in every `redis.sentinels` entry
/// (Sentinel: then the master and replicas are reached over TLS too). With
/// no `ca_file`, the server certificate is checked against the system's
/// trust store. There is no switch to skip the check.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The CA (or bundle) that signed the server certificates, for a private
    /// CA such as a managed Redis's.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (chain) for servers that require one
    /// (`tls-auth-clients yes`). Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key. Never logged.
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether any file is set.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

impl RedisSettings {
    /// The URL with any password replaced by `***`, safe to log and show.
    ///
    /// ```
    /// use redis_client::RedisSettings;
    /// let settings = RedisSettings { url: "redis://app:s3cret@cache:6379/2".into(), ..Default::default() };
    /// assert_eq!(settings.redacted_url(), "redis://app:***@cache:6379/2");
    /// ```
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Where this connects, passwords hidden: the URL, or for a cluster
    /// `cluster <node>,<node>...`. For messages and logs.
    pub fn redacted_target(&self) -> String {
        match self.mode {
            RedisMode::Standalone => self.redacted_url(),
            RedisMode::Cluster => {
                let nodes: Vec<String> = self.nodes.iter().map(|node| redact_url(node)).collect();
                format!("cluster {}", nodes.join(","))
            }
            RedisMode::Sentinel => {
                let nodes: Vec<String> =
                    self.sentinels.iter().map(|node| redact_url(node)).collect();
                format!(
                    "master {:?} via sentinels {}",
                    self.master_name,
                    nodes.join(",")
                )
            }
        }
    }

    /// Checks the values that cannot be right whatever the deployment.
    ///
    /// # Errors
    ///
    /// [`RedisClientError::InvalidSettings`] naming the key and the fix.
    pub fn validate(&self) -> Result<(), RedisClientError> {
        let invalid = |reason: String| Err(RedisClientError::InvalidSettings(reason));
        let is_redis_url = |url: &str| url.starts_with("redis://") || url.starts_with("rediss://");
        if !is_redis_url(&self.url) {
            return invalid(format!(
                "redis.url must start with redis:// or rediss://, got {}",
                self.redacted_url()
            ));
        }
        if self.mode == RedisMode::Sentinel {
            if self.sentinels.is_empty() || self.master_name.is_empty() {
                return invalid(
                    "redis.mode = \"sentinel\" needs redis.sentinels and redis.master_name, e.g. APP__REDIS__SENTINELS=redis://10.0.0.1:26379 APP__REDIS__MASTER_NAME=mymaster".to_owned(),
                );
            }
            if let Some(bad) = self
                .sentinels
                .iter()
                .find(|node| !is_redis_url(node.trim()))
            {
                return invalid(format!(
                    "every redis.sentinels entry must start with redis:// or rediss://, got {}",
                    redact_url(bad)
                ));
            }
        }
        if self.mode == RedisMode::Cluster {
            if self.nodes.is_empty() {
                return invalid(
                    "redis.mode = \"cluster\" needs redis.nodes, e.g. APP__REDIS__NODES=redis://10.0.0.1:7000,redis://10.0.0.2:7000".to_owned(),
                );
            }
            if let Some(bad) = self.nodes.iter().find(|node| !is_redis_url(node.trim())) {
                return invalid(format!(
                    "every redis.nodes entry must start with redis:// or rediss://, got {}",
                    redact_url(bad)
                ));
            }
        }
        self.validate_tls()?;
        if self.read_from_replicas && self.mode != RedisMode::Sentinel {
            return invalid(
                "redis.read_from_replicas needs redis.mode = \"sentinel\" (on a cluster, every read goes to the slot's master)".to_owned(),
            );
        }
        if self.mode != RedisMode::Standalone
            && self.durable_write_timeout_ms >= self.response_timeout_ms
            && self.durable_write_timeout_ms > 0
        {
            return invalid(format!(
                "redis.durable_write_timeout_ms ({}) must be below redis.response_timeout_ms ({}): WAIT's answer would time out first",
                self.durable_write_timeout_ms, self.response_timeout_ms
            ));
        }
        // Checked in every mode, though a single server ignores it: a value
        // that could never work should not wait for a move to Sentinel.
        if self.durable_write_timeout_ms > 10_000 {
            return invalid(format!(
                "redis.durable_write_timeout_ms must be at most 10000 (0 = never wait), got {}",
                self.durable_write_timeout_ms
            ));
        }
        if self.pool_max_size == 0 {
            return invalid("redis.pool_max_size must be at least 1".to_owned());
        }
        for (key, value) in [
            ("redis.wait_timeout_ms", self.wait_timeout_ms),
            ("redis.connect_timeout_ms", self.connect_timeout_ms),
            ("redis.response_timeout_ms", self.response_timeout_ms),
        ] {
            if value == 0 {
                return invalid(format!("{key} must be at least 1 (0 would never wait)"));
            }
        }
        Ok(())
    }

    /// The URLs this mode connects to first, and the key that names them.
    pub(crate) fn target_urls(&self) -> (&'static str, Vec<&str>) {
        match self.mode {
            RedisMode::Standalone => ("redis.url", vec![self.url.as_str()]),
            RedisMode::Cluster => ("redis.nodes", self.nodes.iter().map(|n| n.trim()).collect()),
            RedisMode::Sentinel => (
                "redis.sentinels",
                self.sentinels.iter().map(|n| n.trim()).collect(),
            ),
        }
    }

    /// Whether this mode's targets are `rediss://` (validated: all or none).
    pub(crate) fn uses_tls(&self) -> bool {
        let (_, urls) = self.target_urls();
        urls.first().is_some_and(|url| url.starts_with("rediss://"))
    }

    /// TLS is all or nothing per mode, never "insecure", and its files come
    /// as a set; whether the files can be read is checked when the pool is
    /// built (see `pool.rs`), with the same one-line errors.
    fn validate_tls(&self) -> Result<(), RedisClientError> {
        let invalid = |reason: String| Err(RedisClientError::InvalidSettings(reason));
        let (key, urls) = self.target_urls();
        let secure = urls
            .iter()
            .filter(|url| url.starts_with("rediss://"))
            .count();
        if secure != 0 && secure != urls.len() {
            return invalid(format!(
                "{key} mixes redis:// and rediss://: use rediss:// for every entry, or for none"
            ));
        }
        if let Some(url) = urls.iter().find(|url| url.contains('#')) {
            return invalid(format!(
                "{key} has a URL fragment (such as #insecure, which would skip the certificate check): remove it from {}",
                redact_url(url)
            ));
        }
        if self.tls.is_set() && secure == 0 {
            return invalid(format!(
                "redis.tls.* is set but {key} uses redis://: switch to rediss:// to use TLS"
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid(
                "redis.tls.cert_file and redis.tls.key_file go together: set both for a client certificate, or neither".to_owned(),
            );
        }
        Ok(())
    }

    pub(crate) fn wait_timeout(&self) -> Duration {
        Duration::from_millis(self.wait_timeout_ms)
    }
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub(crate) fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }
}

// Hand-written so that `{:?}` of the settings (and of everything holding them)
// can never print the password inside the URL.
impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|node| redact_url(node)).collect();
        f.debug_struct("RedisSettings")
            .field("mode", &self.mode)
            .field("url", &self.redacted_url())
            .field("nodes", &nodes)
            .field(
                "sentinels",
                &self
                    .sentinels
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("read_from_replicas", &self.read_from_replicas)
            .field("pool_max_size", &self.pool_max_size)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("idle_check_after_ms", &self.idle_check_after_ms)
            .field("startup_wait_ms", &self.startup_wait_ms)
            .field("durable_write_timeout_ms", &self.durable_write_timeout_ms)
            .finish()
    }
}

/// Replaces the password in `scheme://user:password@host...` with `***`.
///
/// A URL without credentials comes back unchanged. A username alone is kept:
/// it is not a secret, and it helps to see which ACL user is in use.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    // Look for the userinfo's '@' up to the query, not up to the first '/':
    // an unescaped password may contain '/' (and '@': take the last one).
    let userinfo_search_end = url[scheme_end..]
        .find(['?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..userinfo_search_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return url.to_owned();
    };
    // `user:password@` keeps the user; a bare `secret@` may well be a
    // password put where the user goes, so it is hidden whole.
    let shown_user = url[scheme_end..at]
        .split_once(':')
        .map_or("", |(user, _)| user);
    format!("{}{}:***{}", &url[..scheme_end], shown_user, &url[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_without_credentials_is_unchanged() {
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
    }

    #[test]
    fn a_password_alone_is_hidden() {
        assert_eq!(redact_url("redis://:hunter2@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn a_user_and_password_keep_the_user() {
        assert_eq!(
            redact_url("rediss://app:hunter2@h:1/3"),
            "rediss://app:***@h:1/3"
        );
    }

    #[test]
    fn a_bare_userinfo_is_treated_as_a_password() {
        assert_eq!(redact_url("redis://hunter2@h:1"), "redis://:***@h:1");
    }

    #[test]
    fn a_password_containing_at_signs_is_hidden_whole() {
        assert_eq!(redact_url("redis://u:p@ss@w0rd@h:1"), "redis://u:***@h:1");
    }

    #[test]
    fn a_password_containing_slashes_is_hidden_whole() {
        assert_eq!(redact_url("redis://:pa/ss@h:1/0"), "redis://:***@h:1/0");
    }

    #[test]
    fn an_at_sign_after_the_host_is_not_userinfo() {
        assert_eq!(redact_url("redis://h:1/0?x=a@b"), "redis://h:1/0?x=a@b");
    }

    #[test]
    fn debug_never_prints_the_password() {
        let settings = RedisSettings {
            url: "redis://:hunter2@h:1".into(),
            ..Default::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redis://:***@h:1"), "{printed}");
    }

    #[test]
    fn the_defaults_are_valid() {
        assert!(RedisSettings::default().validate().is_ok());
    }

    #[test]
    fn a_non_redis_url_is_rejected_without_its_password() {
        let settings = RedisSettings {
            url: "http://:hunter2@h:1".into(),
            ..Default::default()
        };
        let message = settings
            .validate()
            .expect_err("must be rejected")
            .to_string();
        assert!(message.contains("redis.url"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    fn rejection(settings: &RedisSettings) -> String {
        settings
            .validate()
            .expect_err("must be rejected")
            .to_string()
    }

    #[test]
    fn tls_files_without_rediss_are_rejected() {
        let settings = RedisSettings {
            tls: TlsSettings {
                ca_file: Some("/etc/ca.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let message = rejection(&settings);
        assert!(message.contains("switch to rediss://"), "{message}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let settings = RedisSettings {
            url: "rediss://cache:6380".into(),
            tls: TlsSettings {
                cert_file: Some("/etc/client.pem".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let message = rejection(&settings);
        assert!(message.contains("redis.tls.key_file"), "{message}");
    }

    #[test]
    fn the_insecure_fragment_is_refused_without_printing_the_password() {
        let settings = RedisSettings {
            url: "rediss://:hunter2@cache:6380/#insecure".into(),
            ..Default::default()
        };
        let message = rejection(&settings);
        assert!(message.contains("#insecure"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn cluster_nodes_cannot_mix_tls_and_plain() {
        let settings = RedisSettings {
            mode: RedisMode::Cluster,
            nodes: vec!["rediss://a:7000".into(), "redis://b:7000".into()],
            ..Default::default()
        };
        let message = rejection(&settings);
        assert!(message.contains("mixes"), "{message}");
    }

    #[test]
    fn tls_everywhere_with_a_full_set_of_files_is_valid() {
        let tls = TlsSettings {
            ca_file: Some("/etc/ca.pem".into()),
            cert_file: Some("/etc/client.pem".into()),
            key_file: Some("/etc/client.key".into()),
        };
        for settings in [
            RedisSettings {
                url: "rediss://cache:6380".into(),
                tls: tls.clone(),
                ..Default::default()
            },
            RedisSettings {
                mode: RedisMode::Cluster,
                nodes: vec!["rediss://a:7000".into(), " rediss://b:7000".into()],
                tls: tls.clone(),
                ..Default::default()
            },
            RedisSettings {
                mode: RedisMode::Sentinel,
                sentinels: vec!["rediss://a:26379".into()],
                master_name: "mymaster".into(),
                tls: tls.clone(),
                read_from_replicas: true,
                ..Default::default()
            },
        ] {
            assert!(settings.validate().is_ok(), "{settings:?}");
        }
    }

    #[test]
    fn replica_reads_need_sentinel_mode() {
        let settings = RedisSettings {
            read_from_replicas: true,
            ..Default::default()
        };
        let message = rejection(&settings);
        assert!(message.contains("redis.read_from_replicas"), "{message}");
    }

    #[test]
    fn zero_pool_size_and_zero_timeouts_are_rejected() {
        let zero_pool = RedisSettings {
            pool_max_size: 0,
            ..Default::default()
        };
        assert!(zero_pool.validate().is_err());
        let zero_timeout = RedisSettings {
            response_timeout_ms: 0,
            ..Default::default()
        };
        let message = zero_timeout.validate().expect_err("rejected").to_string();
        assert!(message.contains("redis.response_timeout_ms"), "{message}");
    }
}
