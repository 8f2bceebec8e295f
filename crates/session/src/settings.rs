//! [`SessionSettings`]: how long sessions live, how large they grow, and the
//! cookie that carries them, as plain data.
//!
//! The values are checked once, when
//! [`SessionMiddlewareBuilder::build`](crate::SessionMiddlewareBuilder::build)
//! turns them into the validated configuration the middleware runs on, so
//! a value that can never work stops start-up instead of failing on a
//! request path.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// How long the browser keeps the session cookie.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum CookieMode {
    /// `Max-Age` = the idle timeout, renewed whenever the session's TTL is:
    /// the session survives a browser restart. The default.
    #[default]
    Persistent,
    /// No `Max-Age`: the browser drops the cookie when it closes. The server
    /// still expires the session by the idle and absolute timeouts.
    BrowserSession,
}

/// The cookie's `SameSite` attribute: when the browser sends it on requests
/// that another site started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SameSite {
    /// Only on requests this site started: links from elsewhere arrive
    /// without a session.
    Strict,
    /// Also on top-level navigations from elsewhere (a link), never on
    /// another site's forms, fetches or frames. The default.
    #[default]
    Lax,
    /// On every request, cross-site too. Browsers accept it only with
    /// `Secure`, so the settings refuse it without `cookie_secure`.
    None,
}

/// How sessions live and how they reach the browser: the library's settings,
/// as plain data that the `config` crate or serde can fill in.
///
/// Every field has a safe default; `SessionSettings::default()` is the
/// NestJS design's 30-minute session with a hardened cookie. Hand it to
/// [`SessionMiddlewareBuilder::settings`](crate::SessionMiddlewareBuilder::settings),
/// or set single values with the builder's methods; `build()` checks them
/// all and names the key of the first bad one.
///
/// ```
/// let settings = session::SessionSettings {
///     idle_timeout_secs: 900,
///     cookie_secure: true,
///     ..Default::default()
/// };
/// let store = session::MemorySessionStore::new();
/// let middleware = session::SessionMiddleware::builder(store).settings(settings).build();
/// assert!(middleware.is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Idle timeout in seconds: a session unused this long expires (the
    /// store's sliding TTL). 1 to 31,536,000 (a year). Default 1800 (30
    /// minutes), as in the NestJS design.
    pub idle_timeout_secs: u64,
    /// Absolute lifetime in seconds, counted from the session's creation:
    /// however busy, a session ends this long after it began. Enforced by
    /// the store itself, since the TTL never reaches past it. 0 turns it
    /// off; at most a year. Default 28800 (8 hours).
    pub absolute_timeout_secs: u64,
    /// Slide a session's TTL (and its `__seen`) only once more than this
    /// share of the idle timeout has passed since the last refresh, for
    /// reads and writes alike: a read inside it writes nothing, a write
    /// inside it writes only its fields (for Redis, an increment is then an
    /// `HMGET` and an `HINCRBY`, with no `PEXPIRE`). A creation, a renewal
    /// and a pure refresh always slide it. 0.0 to 1.0; 0.0 slides it on
    /// every write (and every read). Values above 0.5 act as 0.5: a
    /// threshold near the idle timeout would let a busy session expire. The
    /// default 0.25 costs an idle timeout that may end up to 25% early.
    pub touch_after_fraction: f64,
    /// Most user fields a session may hold: 1 to 1024. Default 64.
    pub max_fields: usize,
    /// Most bytes (field names plus values, user fields only) a session may
    /// hold: 1 to 1 MiB. Default 16384 (16 KiB).
    pub max_bytes: usize,
    /// The most time one request's session work may spend waiting on the
    /// store, all its calls together (the load, the immediate operations,
    /// the commit and any retry). Past it the request gets
    /// [`StoreError::Unavailable`](crate::StoreError::Unavailable), a 503.
    /// 1 to 60,000 ms. Default 2000.
    pub store_timeout_ms: u64,
    /// Name of the cookie carrying the session id: an RFC 6265 token.
    /// A `__Host-` name requires `cookie_secure`, `cookie_path = "/"` and no
    /// domain; a `__Secure-` name requires `cookie_secure`, as browsers do.
    /// Default `"sid"`.
    pub cookie_name: String,
    /// The cookie's `Path`: it is sent only to URLs below it. Starts with
    /// `/`. Default `"/"`.
    pub cookie_path: String,
    /// The cookie's `Domain`: without one (the default) the cookie goes back
    /// only to the host that set it; with one, to that domain and its
    /// subdomains too. An empty string means none.
    pub cookie_domain: Option<String>,
    /// The cookie's `SameSite`: `"strict"`, `"lax"` (the default) or
    /// `"none"` (needs `cookie_secure`).
    pub cookie_same_site: SameSite,
    /// Send the cookie with `Secure`, so only over HTTPS. Default false;
    /// turn it on wherever the site is served over HTTPS.
    pub cookie_secure: bool,
    /// Send the cookie with `HttpOnly`, out of reach of page JavaScript.
    /// Default true.
    pub cookie_http_only: bool,
    /// `"persistent"` or `"browser-session"`: see [`CookieMode`].
    pub cookie_mode: CookieMode,
    /// Most live sessions one signed-in user may have: 1 to 1000. At the
    /// cap, a sign-in ends the user's oldest session. Default 100.
    pub max_sessions_per_user: usize,
    /// Session values encrypted at rest: see [`EncryptionSettings`]. Off
    /// unless keys are given.
    pub encryption: EncryptionSettings,
    /// Keys that sign the cookie, `"<key-id>:<base64 of 32 bytes>"` each,
    /// newest first (see [`KeyRing`](crate::KeyRing)). With keys, the
    /// cookie is `<id>.<tag>` (HMAC-SHA256 under the first key; every key
    /// verifies), and a cookie whose tag does not verify gets a fresh
    /// session without a store lookup. Empty (the default): bare ids, as
    /// Nest nodes send.
    pub cookie_signing_keys: SecretList,
    /// Accept, once, a cookie in the NestJS design's id form (1 to 16 of
    /// `[0-9a-z]`) that names a live session: it is renewed at once to a
    /// fresh id, keeping its data. A migration switch; default false.
    pub legacy_ids: bool,
    /// Keep ids hashed at rest: the store's keys (and the user index) hold
    /// SHA-256 of the id, never the id. The store must be built for it
    /// ([`RedisSessionStore::with_hashed_ids`](crate::RedisSessionStore::with_hashed_ids));
    /// `build()` refuses a store that does not. Default false: Nest nodes
    /// read `sid_<id>`.
    pub hash_ids: bool,
    /// With `hash_ids`, whether a session still under its raw key (written
    /// before hash_ids was on) loads, and moves to its hashed key. Default
    /// true; turn it off to end the migration. Must be false on Redis
    /// Cluster.
    pub accept_raw_keys: bool,
}

/// Session values encrypted at rest (`session.encryption.*`): see the
/// README's "Protecting session data" for the threat model and the steps
/// of a rotation and a migration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EncryptionSettings {
    /// The key ring, `"<key-id>:<base64 of 32 bytes>"` each, newest first:
    /// the first key seals, every key opens. From the environment, one
    /// comma-separated value. Empty: encryption is off (unless
    /// `keys_file` is set).
    pub keys: SecretList,
    /// A file holding the key ring instead, one key a line (blank lines and
    /// `#` comments skipped), so that keys need not sit in the environment.
    /// Not together with `keys`.
    pub keys_file: Option<PathBuf>,
    /// Whether a plain value still reads where a sealed one belongs (the
    /// user fields not named in `plaintext_fields`, and the signed-in
    /// user): a migration switch, for the sessions written before
    /// encryption was on. Default false: with keys, a plain value there
    /// counts like one that does not decrypt, so that whoever can write to
    /// Redis cannot forge a value (or a signed-in user) in plain text.
    /// While it is true, start-up warns that it allows exactly that.
    /// Must be true while `seal_writes` is false.
    pub accept_plaintext: bool,
    /// Whether writes seal. Default true. Turning encryption on across a
    /// fleet takes two deploys: first keys with `seal_writes = false`
    /// (every node can open, none seals yet), then `true`.
    pub seal_writes: bool,
    /// User fields kept in plain text, so that `incr` and
    /// `compare_and_set` work on them (Redis must see the value). Default
    /// none. From the environment, comma-separated.
    #[serde(deserialize_with = "one_or_many")]
    pub plaintext_fields: Vec<String>,
}

impl Default for EncryptionSettings {
    fn default() -> Self {
        Self {
            keys: SecretList::default(),
            keys_file: None,
            accept_plaintext: false,
            seal_writes: true,
            plaintext_fields: Vec::new(),
        }
    }
}

/// A list of secrets (keys) whose `Debug` shows how many there are and
/// nothing else. Deserializes from a list of strings, or from one
/// comma-separated string (the form an environment variable takes).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretList(#[serde(deserialize_with = "one_or_many")] Vec<String>);

impl SecretList {
    /// The entries, for [`KeyRing::parse`](crate::KeyRing::parse).
    pub fn entries(&self) -> &[String] {
        &self.0
    }

    /// True when no secret is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Into<String>> FromIterator<S> for SecretList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

/// Key text is wiped when the settings holding it are dropped.
impl Drop for SecretList {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretList({} redacted)", self.0.len())
    }
}

/// A list of strings, given as a list or as one comma-separated string.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    // Empty entries are dropped: `APP__SESSION__ENCRYPTION__KEYS=` (set
    // but empty) means no keys, not one empty key.
    let entries = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(list) => list,
    };
    Ok(entries
        .into_iter()
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect())
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 1800,
            absolute_timeout_secs: 8 * 3600,
            touch_after_fraction: 0.25,
            max_fields: 64,
            max_bytes: 16 * 1024,
            store_timeout_ms: 2000,
            cookie_name: "sid".to_owned(),
            cookie_path: "/".to_owned(),
            cookie_domain: None,
            cookie_same_site: SameSite::Lax,
            cookie_secure: false,
            cookie_http_only: true,
            cookie_mode: CookieMode::Persistent,
            max_sessions_per_user: 100,
            encryption: EncryptionSettings::default(),
            cookie_signing_keys: SecretList::default(),
            legacy_ids: false,
            hash_ids: false,
            accept_raw_keys: true,
        }
    }
}
