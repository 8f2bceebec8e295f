//! Typed settings for sessions: the store, the key layout, the timeouts, the
//! limits and the cookie.

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

/// How long the browser keeps the session cookie.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CookieMode {
    /// `Max-Age` = the idle timeout, renewed whenever the session's TTL is:
    /// the session survives a browser restart. The default.
    #[default]
    Persistent,
    /// No `Max-Age`: the browser drops the cookie when it closes. The server
    /// still expires the session by the idle and absolute timeouts.
    BrowserSession,
}

/// How sessions are stored, how long they live, and how they reach the browser.
///
/// Loaded by the app from the `[session]` section of `config/*.toml` or from
/// `APP__SESSION__*` environment variables.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// `"redis"` or `"memory"`. Default `"redis"`.
    pub store: StoreKind,
    /// Prefix of every session key in Redis. Default `"sid_"`, the NestJS
    /// design's layout, so that a Nest node and a Rust node share sessions.
    pub key_prefix: String,
    /// Idle timeout in seconds: a session unused this long expires (it is the
    /// key's TTL in Redis, sliding). Default 1800 (30 minutes), as in the
    /// NestJS design.
    pub idle_timeout_secs: u64,
    /// Absolute lifetime in seconds, counted from the session's creation
    /// (stored in the session as `__created`): however busy, a session ends
    /// this long after it began, and the user signs in again. Enforced by
    /// Redis itself, since the TTL never reaches past it. 0 turns it off.
    /// Default 28800 (8 hours, a working day).
    pub absolute_timeout_secs: u64,
    /// Refresh the TTL of a session that is only read once more than this
    /// share of the idle timeout has passed since the last refresh. Writes
    /// always refresh it. 0.0 refreshes on every request; the default 0.25
    /// makes read-mostly traffic cost one round trip and no writes, at the
    /// price of an idle timeout that may end up to 25% early.
    pub touch_after_fraction: f64,
    /// Most user fields a session may hold. Default 64.
    pub max_fields: usize,
    /// Most bytes (field names plus values, user fields only) a session may
    /// hold. Default 16384 (16 KiB).
    pub max_bytes: usize,
    /// Name of the cookie carrying the session id. Default `"sid"`.
    pub cookie_name: String,
    /// Send the cookie with `Secure`, so only over HTTPS. Default false; turn
    /// it on wherever the site is served over HTTPS.
    pub cookie_secure: bool,
    /// `"persistent"` or `"browser-session"`: see [`CookieMode`].
    pub cookie_mode: CookieMode,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            store: StoreKind::Redis,
            key_prefix: "sid_".to_owned(),
            idle_timeout_secs: 1800,
            absolute_timeout_secs: 8 * 3600,
            touch_after_fraction: 0.25,
            max_fields: 64,
            max_bytes: 16 * 1024,
            cookie_name: "sid".to_owned(),
            cookie_secure: false,
            cookie_mode: CookieMode::Persistent,
        }
    }
}

/// The longest timeout we accept: a year. Longer is surely a typo (ms?).
const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// The largest session we accept: 1 MiB. Redis would take 512 MiB, but a
/// session that large is read on every request that uses it.
const MAX_SESSION_BYTES: usize = 1024 * 1024;

/// Most fields we accept in `max_fields`: a script's arguments must stay
/// well inside Lua's stack.
const MAX_SESSION_FIELDS: usize = 1024;

impl SessionSettings {
    /// The idle timeout as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    /// The absolute lifetime, if any.
    pub fn absolute_timeout(&self) -> Option<Duration> {
        (self.absolute_timeout_secs > 0).then(|| Duration::from_secs(self.absolute_timeout_secs))
    }

    /// The rules every write enforces, for the store.
    pub fn write_policy(&self) -> crate::WritePolicy {
        crate::WritePolicy {
            idle_timeout: self.idle_timeout(),
            absolute_timeout: self.absolute_timeout(),
            max_fields: self.max_fields,
            max_bytes: self.max_bytes,
        }
    }

    /// How long after its last refresh a session that is only read gets its
    /// TTL refreshed again.
    pub fn touch_after(&self) -> Duration {
        self.idle_timeout().mul_f64(self.touch_after_fraction)
    }

    /// Checks the values that can never work.
    ///
    /// # Errors
    ///
    /// A sentence naming the key and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > MAX_TIMEOUT_SECS {
            return Err(format!(
                "session.idle_timeout_secs must be between 1 and {MAX_TIMEOUT_SECS} seconds, got {}",
                self.idle_timeout_secs
            ));
        }
        if self.absolute_timeout_secs > MAX_TIMEOUT_SECS {
            return Err(format!(
                "session.absolute_timeout_secs must be at most {MAX_TIMEOUT_SECS} seconds (0 = off), got {}",
                self.absolute_timeout_secs
            ));
        }
        if !(0.0..=1.0).contains(&self.touch_after_fraction) {
            return Err(format!(
                "session.touch_after_fraction must be between 0.0 and 1.0, got {}",
                self.touch_after_fraction
            ));
        }
        if self.max_fields == 0 || self.max_fields > MAX_SESSION_FIELDS {
            return Err(format!(
                "session.max_fields must be between 1 and {MAX_SESSION_FIELDS}, got {}",
                self.max_fields
            ));
        }
        if self.max_bytes == 0 || self.max_bytes > MAX_SESSION_BYTES {
            return Err(format!(
                "session.max_bytes must be between 1 and {MAX_SESSION_BYTES}, got {}",
                self.max_bytes
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
        assert_eq!(settings.idle_timeout_secs, 1800);
        assert_eq!(
            settings.absolute_timeout(),
            Some(Duration::from_secs(8 * 3600))
        );
        assert_eq!(settings.touch_after(), Duration::from_secs(450));
        assert_eq!(settings.store, StoreKind::Redis);
        assert!(settings.validate().is_ok());
    }

    #[test]
    fn impossible_values_are_rejected_with_the_key_name() {
        let cases = [
            SessionSettings {
                idle_timeout_secs: 0,
                ..Default::default()
            },
            SessionSettings {
                idle_timeout_secs: MAX_TIMEOUT_SECS + 1,
                ..Default::default()
            },
            SessionSettings {
                absolute_timeout_secs: MAX_TIMEOUT_SECS + 1,
                ..Default::default()
            },
            SessionSettings {
                touch_after_fraction: 1.5,
                ..Default::default()
            },
            SessionSettings {
                touch_after_fraction: f64::NAN,
                ..Default::default()
            },
            SessionSettings {
                max_fields: 0,
                ..Default::default()
            },
            SessionSettings {
                max_bytes: MAX_SESSION_BYTES + 1,
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
