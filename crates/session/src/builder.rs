//! [`SessionMiddlewareBuilder`]: one method per choice, and `build()` as the
//! one place where the values are checked.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse};

use crate::config::Config;
use crate::middleware::CommitErrorHandler;
use crate::{
    ConfigError, CookieMode, NewSessionGate, SameSite, SessionError, SessionMiddleware,
    SessionService, SessionSettings, SessionStore,
};

/// Builds a [`SessionMiddleware`]: from [`SessionMiddleware::builder`].
///
/// Every method records a choice; [`SessionMiddlewareBuilder::build`] checks
/// them all and names the key of the first one that can never work, so a
/// bad value stops start-up instead of failing on a request path.
///
/// ```
/// use std::time::Duration;
/// use session::{MemorySessionStore, SameSite, SessionMiddleware};
///
/// let sessions = SessionMiddleware::builder(MemorySessionStore::new())
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .absolute_timeout(Some(Duration::from_secs(12 * 3600)))
///     .cookie_name("__Host-sid")
///     .cookie_secure(true)
///     .cookie_same_site(SameSite::Strict)
///     .build()?;
/// # Ok::<(), session::ConfigError>(())
/// ```
#[must_use = "call build() to get the middleware"]
pub struct SessionMiddlewareBuilder {
    store: Arc<dyn SessionStore>,
    settings: SessionSettings,
    on_commit_error: Option<CommitErrorHandler>,
    new_session_gate: Option<Arc<dyn NewSessionGate>>,
}

impl std::fmt::Debug for SessionMiddlewareBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddlewareBuilder")
            .field("store", &self.store)
            .field("settings", &self.settings)
            .field("new_session_gate", &self.new_session_gate)
            .finish_non_exhaustive()
    }
}

impl SessionMiddleware {
    /// A builder over `store`, with the safe defaults of
    /// [`SessionSettings`].
    pub fn builder(store: impl SessionStore) -> SessionMiddlewareBuilder {
        SessionMiddlewareBuilder::new(Arc::new(store))
    }
}

impl SessionMiddlewareBuilder {
    fn new(store: Arc<dyn SessionStore>) -> Self {
        Self {
            store,
            settings: SessionSettings::default(),
            on_commit_error: None,
            new_session_gate: None,
        }
    }

    /// Takes every value from `settings` (as loaded by the `config` crate,
    /// say), replacing earlier choices; later methods change single values.
    pub fn settings(mut self, settings: SessionSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The idle timeout, in whole seconds: a session unused this long
    /// expires. Default 30 minutes. `session.idle_timeout_secs`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.idle_timeout_secs = timeout.as_secs();
        self
    }

    /// The absolute lifetime from creation, in whole seconds, or `None` for
    /// none. Default 8 hours. `session.absolute_timeout_secs`.
    pub fn absolute_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.absolute_timeout_secs = timeout.map_or(0, |timeout| timeout.as_secs());
        self
    }

    /// The share of the idle timeout after which a request (a read or a
    /// write) slides the TTL; above 0.5 it acts as 0.5.
    /// Default 0.25. `session.touch_after_fraction`.
    pub fn touch_after_fraction(mut self, fraction: f64) -> Self {
        self.settings.touch_after_fraction = fraction;
        self
    }

    /// Most user fields per session. Default 64. `session.max_fields`.
    pub fn max_fields(mut self, fields: usize) -> Self {
        self.settings.max_fields = fields;
        self
    }

    /// Most bytes of user field names and values per session. Default
    /// 16 KiB. `session.max_bytes`.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_bytes = bytes;
        self
    }

    /// The most time one request's session work may spend in the store,
    /// all calls together, in whole milliseconds. Default 2 s.
    /// `session.store_timeout_ms`.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.settings.store_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The cookie's name. Default `sid`. `session.cookie_name`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.settings.cookie_name = name.into();
        self
    }

    /// The cookie's `Path`. Default `/`. `session.cookie_path`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.settings.cookie_path = path.into();
        self
    }

    /// The cookie's `Domain`, or `None` (the default) for the host that set
    /// it only. `session.cookie_domain`.
    pub fn cookie_domain(mut self, domain: Option<String>) -> Self {
        self.settings.cookie_domain = domain;
        self
    }

    /// The cookie's `SameSite`. Default [`SameSite::Lax`];
    /// [`SameSite::None`] needs [`cookie_secure`](Self::cookie_secure).
    /// `session.cookie_same_site`.
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.settings.cookie_same_site = same_site;
        self
    }

    /// Send the cookie only over HTTPS. Default false.
    /// `session.cookie_secure`.
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.settings.cookie_secure = secure;
        self
    }

    /// Keep the cookie out of reach of page JavaScript. Default true.
    /// `session.cookie_http_only`.
    pub fn cookie_http_only(mut self, http_only: bool) -> Self {
        self.settings.cookie_http_only = http_only;
        self
    }

    /// Persistent (`Max-Age`, the default) or a browser-session cookie.
    /// `session.cookie_mode`.
    pub fn cookie_mode(mut self, mode: CookieMode) -> Self {
        self.settings.cookie_mode = mode;
        self
    }

    /// What to answer when a handler succeeded but its session could not be
    /// saved. The middleware has logged the failure already (once, with its
    /// causes); `handler` only shapes the response, for apps whose error
    /// bodies look otherwise. Default: [`SessionError::json_response`],
    /// the same body a handler gets by returning the error.
    ///
    /// ```
    /// use actix_web::{HttpResponse, ResponseError};
    /// # let builder = session::SessionMiddleware::builder(session::MemorySessionStore::new());
    /// let builder = builder.on_commit_error(|error, _request| {
    ///     HttpResponse::build(error.status_code()).body("please try again")
    /// });
    /// ```
    pub fn on_commit_error<F>(mut self, handler: F) -> Self
    where
        F: Fn(&SessionError, &HttpRequest) -> HttpResponse + Send + Sync + 'static,
    {
        self.on_commit_error = Some(Arc::new(handler));
        self
    }

    /// Asks `gate` before each session a request would create (a
    /// per-client limit on new sessions, say): see [`NewSessionGate`] for
    /// when it is asked and what a refusal does. Requests on live sessions
    /// never meet it. Default: none, and no work per request for it; with
    /// one, a request that opens its session also notes its peer address
    /// (and, from a proxy the gate trusts, its `X-Forwarded-For`).
    pub fn new_session_gate(mut self, gate: impl NewSessionGate) -> Self {
        self.new_session_gate = Some(Arc::new(gate));
        self
    }

    /// Checks every value and builds the middleware. Clone it into each
    /// worker's `App` (clones share the store).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key of the first value that can never
    /// work: a timeout of 0 or past a year, a fraction outside 0 to 1 (or
    /// NaN), limits out of range, a cookie name or path a browser would
    /// drop, `SameSite=None` without `Secure`, a key ring entry that is
    /// not `<id>:<base64 of 32 bytes>` (named by its id, never its bytes).
    pub fn build(self) -> Result<SessionMiddleware, ConfigError> {
        let mut config = Config::new(self.settings)?;
        config.gate = self.new_session_gate.map(crate::config::Gate);
        if config.settings.hash_ids != self.store.hashes_ids() {
            return Err(ConfigError::new(
                "session.hash_ids",
                if config.settings.hash_ids {
                    "= true needs a store that hashes ids (RedisSessionStore::with_hashed_ids)"
                } else {
                    "= false, but the store hashes ids: set it true to match the store"
                },
            ));
        }
        // A store that already seals (it seals the signed-in user, which no
        // other store does) must not be sealed twice: nothing would open.
        if config.encryption.is_some() && self.store.seals_field(crate::store::USER_FIELD) {
            return Err(ConfigError::new(
                "session.encryption.keys",
                "are set, but the store is already a SealedStore: give the keys to one of them",
            ));
        }
        // With encryption keys, every store call goes through the sealing
        // layer: nothing below it ever sees a plain user value.
        let store = crate::protect::seal_if_configured(
            self.store,
            config.encryption.clone(),
            &config.settings,
        );
        let on_commit_error = self.on_commit_error.unwrap_or_else(|| {
            Arc::new(|error: &SessionError, _: &HttpRequest| error.json_response())
        });
        Ok(SessionMiddleware::from_parts(
            SessionService::new(store, config),
            on_commit_error,
        ))
    }
}
