//! Typed settings for the Redis connection pool.

use std::fmt;
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
/// The three timeouts bound every operation: a request that needs Redis gets
/// its answer, or an error, within `wait_timeout_ms + connect_timeout_ms +
/// response_timeout_ms` (2 s with the defaults), however Redis misbehaves.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `"standalone"` (default) or `"cluster"`.
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
    /// Most connections the pool keeps open. Default 16.
    pub pool_max_size: usize,
    /// How long a request may wait for a free pooled connection. Default 500.
    pub wait_timeout_ms: u64,
    /// How long opening a new TCP connection may take. Default 500.
    pub connect_timeout_ms: u64,
    /// How long Redis may take to answer one command. Default 1000.
    pub response_timeout_ms: u64,
    /// A pooled connection idle for longer than this is checked with a PING
    /// before it is handed out again. Busy connections are not: that would
    /// cost a round trip per request. Default 10000.
    pub idle_check_after_ms: u64,
    /// At start-up, how long to keep trying before giving up on an
    /// unreachable Redis. Default 5000.
    pub startup_wait_ms: u64,
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
            pool_max_size: 16,
            wait_timeout_ms: 500,
            connect_timeout_ms: 500,
            response_timeout_ms: 1000,
            idle_check_after_ms: 10_000,
            startup_wait_ms: 5000,
        }
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
                    "every redis.sentinels entry must start with redis://, got {}",
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
            .field("pool_max_size", &self.pool_max_size)
            .field("wait_timeout_ms", &self.wait_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("idle_check_after_ms", &self.idle_check_after_ms)
            .field("startup_wait_ms", &self.startup_wait_ms)
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
