//! [`Config`]: [`SessionSettings`] checked once, in the shapes the request
//! path uses, so that nothing on that path can meet a value that does not
//! work (a NaN fraction, a TTL past what a store can hold, a cookie name a
//! browser drops).

use std::sync::Arc;
use std::time::Duration;

use crate::limits::ConfigError;
use crate::protect::KeyRing;
use crate::settings::EncryptionSettings;
use crate::{CookieMode, NewSessionGate, SameSite, SessionSettings, WritePolicy};

/// The longest store budget per request we accept.
const MAX_STORE_TIMEOUT_MS: u64 = 60_000;

/// The cookie, as every response writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CookieConfig {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) domain: Option<String>,
    pub(crate) same_site: SameSite,
    pub(crate) secure: bool,
    pub(crate) http_only: bool,
    /// `Max-Age` in seconds, for [`CookieMode::Persistent`].
    pub(crate) max_age_secs: Option<i64>,
    /// `session.cookie_signing_keys`, if any: the cookie is `<id>.<tag>`.
    pub(crate) signing: Option<Arc<KeyRing>>,
    /// `session.legacy_ids`.
    pub(crate) legacy_ids: bool,
    /// What follows `name=value` in a session cookie's `Set-Cookie`, as
    /// the `cookie` crate writes it: formatted once, not per response.
    pub(crate) set_suffix: String,
}

/// Validated settings: only [`Config::new`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// The settings as given, for [`crate::SessionService::settings`].
    pub(crate) settings: SessionSettings,
    pub(crate) policy: WritePolicy,
    pub(crate) touch_after: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) cookie: CookieConfig,
    /// `session.max_sessions_per_user`.
    pub(crate) max_sessions_per_user: usize,
    /// `session.encryption.keys` (or `keys_file`), if any.
    pub(crate) encryption: Option<Arc<KeyRing>>,
    /// The gate every request's new sessions pass, if the app set one
    /// ([`crate::SessionMiddlewareBuilder::new_session_gate`]). Here, in
    /// the shared config, so that a request's clones of the service carry
    /// no more than before.
    pub(crate) gate: Option<Gate>,
}

/// A [`NewSessionGate`], equal only to itself.
#[derive(Debug, Clone)]
pub(crate) struct Gate(pub(crate) Arc<dyn NewSessionGate>);

impl PartialEq for Gate {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The write policy of the default settings: the scripts a Redis store
/// loads before it knows which policy it will serve.
pub(crate) fn default_policy() -> WritePolicy {
    Config::new(SessionSettings::default()).map_or_else(
        // The defaults are valid (a test checks it); this is never taken.
        |_| {
            WritePolicy::new(Duration::from_secs(1800), None, 64, 16 * 1024)
                .unwrap_or_else(|_| unreachable!("a valid policy"))
        },
        |config| config.policy,
    )
}

impl Config {
    /// Checks every value, and names the key of the first that can never
    /// work.
    pub(crate) fn new(settings: SessionSettings) -> Result<Self, ConfigError> {
        let s = &settings;
        let policy = WritePolicy::new(
            Duration::from_secs(s.idle_timeout_secs),
            (s.absolute_timeout_secs > 0).then(|| Duration::from_secs(s.absolute_timeout_secs)),
            s.max_fields,
            s.max_bytes,
        )?;
        // `contains` is false for NaN, so NaN is refused here too.
        if !(0.0..=1.0).contains(&s.touch_after_fraction) {
            return Err(ConfigError::new(
                "session.touch_after_fraction",
                format!(
                    "must be between 0.0 and 1.0, got {}",
                    s.touch_after_fraction
                ),
            ));
        }
        if s.store_timeout_ms == 0 || s.store_timeout_ms > MAX_STORE_TIMEOUT_MS {
            return Err(ConfigError::new(
                "session.store_timeout_ms",
                format!(
                    "must be between 1 and {MAX_STORE_TIMEOUT_MS} ms, got {}",
                    s.store_timeout_ms
                ),
            ));
        }
        if s.max_sessions_per_user == 0 || s.max_sessions_per_user > 1000 {
            return Err(ConfigError::new(
                "session.max_sessions_per_user",
                format!(
                    "must be between 1 and 1000, got {}",
                    s.max_sessions_per_user
                ),
            ));
        }
        let cookie = cookie_config(s)?;
        let encryption = encryption_ring(&s.encryption)?.map(Arc::new);
        // One threshold for reads and writes: a read refreshes once the TTL
        // has run down by more than touch_after (commit.rs), a write once
        // __seen is touch_after or more away (the scripts).
        let policy = policy.with_touch_after(policy.idle_timeout().mul_f64(s.touch_after_fraction));
        let touch_after = policy.touch_after();
        Ok(Self {
            encryption,
            gate: None,
            touch_after,
            store_timeout: Duration::from_millis(s.store_timeout_ms),
            max_sessions_per_user: s.max_sessions_per_user,
            policy,
            cookie,
            settings,
        })
    }
}

impl SessionSettings {
    /// Checks every value as
    /// [`SessionMiddlewareBuilder::build`](crate::SessionMiddlewareBuilder::build)
    /// will: for an app that loads its settings at start-up and wants to
    /// stop there, with one line naming the key, before it connects to
    /// anything.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key of the first bad value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Config::new(self.clone()).map(|_| ())
    }
}

/// The encryption key ring, checked: see [`EncryptionSettings::key_ring`].
fn encryption_ring(e: &EncryptionSettings) -> Result<Option<KeyRing>, ConfigError> {
    for field in &e.plaintext_fields {
        if !crate::store::is_user_field(field) {
            return Err(ConfigError::new(
                "session.encryption.plaintext_fields",
                format!("names user fields (non-empty, not starting with __), got {field:?}"),
            ));
        }
    }
    if !e.seal_writes && !e.accept_plaintext {
        // Such a node writes plain values and refuses them: every session
        // it wrote would read as tampered with.
        return Err(ConfigError::new(
            "session.encryption.accept_plaintext",
            "must be true while session.encryption.seal_writes is false (this node writes plain values)",
        ));
    }
    e.key_ring()
}

impl EncryptionSettings {
    /// The key ring these settings name: from `keys`, or read from
    /// `keys_file`; `None` when neither names a key (encryption is off).
    /// For tools that must read sessions as the app does.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `session.encryption.keys` or `keys_file`:
    /// both set, a file that cannot be read or holds no key, or an entry
    /// [`KeyRing::parse`] refuses.
    pub fn key_ring(&self) -> Result<Option<KeyRing>, ConfigError> {
        let Some(path) = &self.keys_file else {
            return KeyRing::parse("session.encryption.keys", self.keys.entries());
        };
        if !self.keys.is_empty() {
            return Err(ConfigError::new(
                "session.encryption.keys_file",
                "is set together with session.encryption.keys: set one of them",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new(
                "session.encryption.keys_file",
                format!("cannot be read ({}): {error}", path.display()),
            )
        })?;
        let ring = KeyRing::parse(
            "session.encryption.keys_file",
            &KeyRing::entries_of_file(&text),
        )?;
        if ring.is_none() {
            return Err(ConfigError::new(
                "session.encryption.keys_file",
                format!("{} holds no key", path.display()),
            ));
        }
        Ok(ring)
    }
}

/// RFC 6265's `token`: visible ASCII but separators.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

fn cookie_config(s: &SessionSettings) -> Result<CookieConfig, ConfigError> {
    if !is_token(&s.cookie_name) {
        return Err(ConfigError::new(
            "session.cookie_name",
            format!(
                "must be a non-empty cookie name (letters, digits, - _ . and no spaces), got {:?}",
                s.cookie_name
            ),
        ));
    }
    // `;` would end the attribute, and controls or non-ASCII are refused by
    // browsers: the cookie would vanish without a word.
    let path_ok = s.cookie_path.starts_with('/')
        && s.cookie_path.len() <= 1024
        && s.cookie_path
            .chars()
            .all(|c| c.is_ascii_graphic() && c != ';');
    if !path_ok {
        return Err(ConfigError::new(
            "session.cookie_path",
            format!(
                "must start with / and hold visible ASCII but ';', got {:?}",
                s.cookie_path
            ),
        ));
    }
    let domain = s
        .cookie_domain
        .as_deref()
        .map(str::trim)
        .filter(|domain| !domain.is_empty());
    if let Some(domain) = domain {
        let bare = domain.strip_prefix('.').unwrap_or(domain);
        let labels_ok = bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !labels_ok {
            return Err(ConfigError::new(
                "session.cookie_domain",
                format!("must be a host name such as example.com, got {domain:?}"),
            ));
        }
    }
    if s.cookie_same_site == SameSite::None && !s.cookie_secure {
        return Err(ConfigError::new(
            "session.cookie_same_site",
            "= \"none\" needs session.cookie_secure = true: browsers drop a SameSite=None cookie without Secure",
        ));
    }
    // The cookie name prefixes browsers enforce (RFC 6265bis, 4.1.3).
    if s.cookie_name.starts_with("__Secure-") && !s.cookie_secure {
        return Err(ConfigError::new(
            "session.cookie_name",
            "starting with __Secure- needs session.cookie_secure = true, or browsers drop it",
        ));
    }
    if s.cookie_name.starts_with("__Host-")
        && (!s.cookie_secure || s.cookie_path != "/" || domain.is_some())
    {
        return Err(ConfigError::new(
            "session.cookie_name",
            "starting with __Host- needs session.cookie_secure = true, session.cookie_path = \"/\" and no session.cookie_domain, or browsers drop it",
        ));
    }
    let max_age_secs = (s.cookie_mode == CookieMode::Persistent)
        // At most a year (checked with the idle timeout): always fits.
        .then(|| i64::try_from(s.idle_timeout_secs).unwrap_or(i64::MAX));
    Ok(CookieConfig {
        name: s.cookie_name.clone(),
        path: s.cookie_path.clone(),
        domain: domain.map(str::to_owned),
        same_site: s.cookie_same_site,
        secure: s.cookie_secure,
        http_only: s.cookie_http_only,
        max_age_secs,
        signing: KeyRing::parse(
            "session.cookie_signing_keys",
            s.cookie_signing_keys.entries(),
        )?
        .map(Arc::new),
        legacy_ids: s.legacy_ids,
        set_suffix: String::new(),
    })
    .map(|mut config| {
        config.set_suffix = crate::cookie::set_cookie_suffix(&config);
        config
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_SESSION_BYTES, MAX_SESSION_FIELDS, MAX_TIMEOUT_SECS};

    #[test]
    fn the_defaults_are_the_nest_layout_and_valid() {
        let config = Config::new(SessionSettings::default()).expect("valid");
        assert_eq!(config.cookie.name, "sid");
        assert_eq!(config.cookie.path, "/");
        assert_eq!(config.cookie.domain, None);
        assert_eq!(config.cookie.same_site, SameSite::Lax);
        assert!(config.cookie.http_only);
        assert_eq!(config.policy.idle_timeout(), Duration::from_secs(1800));
        assert_eq!(
            config.policy.absolute_timeout(),
            Some(Duration::from_secs(8 * 3600))
        );
        assert_eq!(config.touch_after, Duration::from_secs(450));
        assert_eq!(config.store_timeout, Duration::from_secs(2));
    }

    /// 0 slides on every request; a fraction above 0.5 is accepted but acts
    /// as 0.5, for reads (the middleware's threshold) and writes (the
    /// policy's) alike: near 1, a busy session could expire between two
    /// refreshes.
    #[test]
    fn touch_fractions_give_zero_to_half_the_idle_timeout_for_reads_and_writes() {
        for fraction in [0.5, 0.75, 1.0] {
            let config = Config::new(SessionSettings {
                touch_after_fraction: fraction,
                ..SessionSettings::default()
            })
            .expect("valid");
            assert_eq!(config.touch_after, Duration::from_secs(900), "{fraction}");
            assert_eq!(
                config.policy.touch_after(),
                Duration::from_secs(900),
                "{fraction}"
            );
        }
        let config = Config::new(SessionSettings {
            touch_after_fraction: 0.0,
            ..SessionSettings::default()
        })
        .expect("valid");
        assert_eq!(config.touch_after, Duration::ZERO);
        assert_eq!(config.policy.touch_after(), Duration::ZERO);
    }

    /// Every value that can never work, with the key its error must name.
    #[test]
    fn impossible_values_are_rejected_with_the_key_name() {
        let base = SessionSettings::default;
        let cases: Vec<(&str, SessionSettings)> = vec![
            (
                "session.idle_timeout_secs",
                SessionSettings {
                    idle_timeout_secs: 0,
                    ..base()
                },
            ),
            (
                "session.idle_timeout_secs",
                SessionSettings {
                    idle_timeout_secs: MAX_TIMEOUT_SECS + 1,
                    ..base()
                },
            ),
            (
                "session.idle_timeout_secs",
                SessionSettings {
                    idle_timeout_secs: u64::MAX,
                    ..base()
                },
            ),
            (
                "session.absolute_timeout_secs",
                SessionSettings {
                    absolute_timeout_secs: MAX_TIMEOUT_SECS + 1,
                    ..base()
                },
            ),
            (
                "session.touch_after_fraction",
                SessionSettings {
                    touch_after_fraction: 1.5,
                    ..base()
                },
            ),
            (
                "session.touch_after_fraction",
                SessionSettings {
                    touch_after_fraction: -1.0,
                    ..base()
                },
            ),
            (
                "session.touch_after_fraction",
                SessionSettings {
                    touch_after_fraction: f64::NAN,
                    ..base()
                },
            ),
            (
                "session.touch_after_fraction",
                SessionSettings {
                    touch_after_fraction: f64::INFINITY,
                    ..base()
                },
            ),
            (
                "session.max_fields",
                SessionSettings {
                    max_fields: 0,
                    ..base()
                },
            ),
            (
                "session.max_fields",
                SessionSettings {
                    max_fields: MAX_SESSION_FIELDS + 1,
                    ..base()
                },
            ),
            (
                "session.max_bytes",
                SessionSettings {
                    max_bytes: 0,
                    ..base()
                },
            ),
            (
                "session.max_bytes",
                SessionSettings {
                    max_bytes: MAX_SESSION_BYTES + 1,
                    ..base()
                },
            ),
            (
                "session.store_timeout_ms",
                SessionSettings {
                    store_timeout_ms: 0,
                    ..base()
                },
            ),
            (
                "session.store_timeout_ms",
                SessionSettings {
                    store_timeout_ms: 60_001,
                    ..base()
                },
            ),
            (
                "session.cookie_name",
                SessionSettings {
                    cookie_name: "s id".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_name",
                SessionSettings {
                    cookie_name: "sid;".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_name",
                SessionSettings {
                    cookie_name: String::new(),
                    ..base()
                },
            ),
            (
                "session.cookie_name",
                SessionSettings {
                    cookie_name: "sïd".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_name",
                SessionSettings {
                    cookie_name: "__Secure-sid".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_name",
                SessionSettings {
                    cookie_name: "__Host-sid".into(),
                    cookie_secure: true,
                    cookie_path: "/app".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_path",
                SessionSettings {
                    cookie_path: String::new(),
                    ..base()
                },
            ),
            (
                "session.cookie_path",
                SessionSettings {
                    cookie_path: "app".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_path",
                SessionSettings {
                    cookie_path: "/a;b".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_path",
                SessionSettings {
                    cookie_path: "/a b".into(),
                    ..base()
                },
            ),
            (
                "session.cookie_domain",
                SessionSettings {
                    cookie_domain: Some("exa mple.com".into()),
                    ..base()
                },
            ),
            (
                "session.cookie_domain",
                SessionSettings {
                    cookie_domain: Some("example..com".into()),
                    ..base()
                },
            ),
            (
                "session.cookie_domain",
                SessionSettings {
                    cookie_domain: Some("-example.com".into()),
                    ..base()
                },
            ),
            (
                "session.cookie_domain",
                SessionSettings {
                    cookie_domain: Some("a.com;b".into()),
                    ..base()
                },
            ),
            (
                "session.cookie_same_site",
                SessionSettings {
                    cookie_same_site: SameSite::None,
                    cookie_secure: false,
                    ..base()
                },
            ),
        ];
        for (key, settings) in cases {
            let error = Config::new(settings.clone()).expect_err(key);
            assert_eq!(error.key(), key, "{settings:?}");
            let line = error.to_string();
            assert!(line.starts_with(key) && !line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn good_cookie_settings_are_taken_as_given() {
        let config = Config::new(SessionSettings {
            cookie_name: "__Host-app".into(),
            cookie_secure: true,
            cookie_same_site: SameSite::None,
            cookie_http_only: false,
            cookie_mode: CookieMode::BrowserSession,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(config.cookie.same_site, SameSite::None);
        assert!(!config.cookie.http_only);
        assert_eq!(config.cookie.max_age_secs, None);

        let config = Config::new(SessionSettings {
            cookie_path: "/app".into(),
            cookie_domain: Some(" example.com ".into()),
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(config.cookie.domain.as_deref(), Some("example.com"));
        assert_eq!(config.cookie.path, "/app");

        let unset = Config::new(SessionSettings {
            cookie_domain: Some(String::new()),
            ..Default::default()
        })
        .expect("an empty domain means none");
        assert_eq!(unset.cookie.domain, None);
    }
}
