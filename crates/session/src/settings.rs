//! Typed settings for sessions: the store, the key layout, the TTL and the cookie.

use std::time::Duration;

use serde::Deserialize;

/// Which [`crate::SessionStore`] the app builds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// [`crate::RedisSessionStore`]: shared by every app node. The default.
    #[default]
    Redis,
    /// [`crate::MemorySessionStore`]: this process only; sessions are NOT
    /// shared between nodes.
    Memory,
}

/// How sessions are stored and sent to the browser.
///
/// Loaded by the app from the `[session]` section of `config/*.toml` or from
/// `APP__SESSION__*` environment variables.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// `"redis"` or `"memory"`. Default `"redis"`.
    pub store: StoreKind,
    /// Prefix of every session key in Redis. Default `"sid_"`, the NestJS
    /// design's layout, so that a Nest node and a Rust node share sessions.
    pub key_prefix: String,
    /// Idle timeout in seconds: a session unused this long expires. Every
    /// request that uses it starts the clock again, and the cookie's
    /// `Max-Age` is the same. Default 1800 (30 minutes).
    pub ttl_secs: u64,
    /// Name of the cookie carrying the session id. Default `"sid"`.
    pub cookie_name: String,
    /// Send the cookie with `Secure`, so only over HTTPS. Default false; turn
    /// it on wherever the site is served over HTTPS.
    pub cookie_secure: bool,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            store: StoreKind::Redis,
            key_prefix: "sid_".to_owned(),
            ttl_secs: 1800,
            cookie_name: "sid".to_owned(),
            cookie_secure: false,
        }
    }
}

/// The longest idle timeout we accept: a year. Longer is surely a typo (ms?).
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

impl SessionSettings {
    /// The idle timeout as a [`Duration`].
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs)
    }

    /// Checks the values that can never work.
    ///
    /// # Errors
    ///
    /// A sentence naming the key and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.ttl_secs == 0 || self.ttl_secs > MAX_TTL_SECS {
            return Err(format!(
                "session.ttl_secs must be between 1 and {MAX_TTL_SECS} seconds, got {}",
                self.ttl_secs
            ));
        }
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || self.key_prefix.contains(char::is_whitespace)
        {
            return Err("session.key_prefix must be 1 to 64 characters without spaces".to_owned());
        }
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(token) {
            return Err(format!(
                "session.cookie_name must be a non-empty cookie name (letters, digits, - _ .), got {:?}",
                self.cookie_name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_nest_layout_and_valid() {
        let settings = SessionSettings::default();
        assert_eq!(settings.key_prefix, "sid_");
        assert_eq!(settings.cookie_name, "sid");
        assert_eq!(settings.ttl_secs, 1800);
        assert_eq!(settings.store, StoreKind::Redis);
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn impossible_values_are_rejected_with_the_key_name() {
        let cases = [
            SessionSettings {
                ttl_secs: 0,
                ..Default::default()
            },
            SessionSettings {
                ttl_secs: MAX_TTL_SECS + 1,
                ..Default::default()
            },
            SessionSettings {
                key_prefix: String::new(),
                ..Default::default()
            },
            SessionSettings {
                key_prefix: "a b".into(),
                ..Default::default()
            },
            SessionSettings {
                cookie_name: "s id".into(),
                ..Default::default()
            },
            SessionSettings {
                cookie_name: "sid;".into(),
                ..Default::default()
            },
            SessionSettings {
                cookie_name: String::new(),
                ..Default::default()
            },
        ];
        for settings in cases {
            let message = settings.validate().expect_err("must be rejected");
            assert!(message.starts_with("session."), "{message}");
        }
    }
}
