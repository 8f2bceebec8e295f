//! [`SessionService`]: the store and the validated settings, shared by the
//! middleware and the handlers, and the NestJS design's `SessionService`
//! calls for code outside a request.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::{DeserializeOwned, Error as _};

use crate::codec::{self, CodecError};
use crate::config::Config;
use crate::log_text::Escaped;
use crate::metric_names as names;
use crate::store::{Changes, WritePolicy, is_user_field};
use crate::{
    NewSessionGate, SessionError, SessionFields, SessionId, SessionSettings, SessionStore,
    StoreError,
};

/// How often a fresh id may collide before we give up. Each collision has a
/// chance of about 2^-122; a second one means a broken random source.
pub(crate) const FRESH_ID_ATTEMPTS: usize = 3;

fn budget_spent() -> StoreError {
    StoreError::Unavailable(
        "the request's session store budget (session.store_timeout_ms) ran out".into(),
    )
}

/// What is left of a time budget for store calls, and how to spend it.
pub(crate) trait Budget {
    fn remaining(&self) -> Duration;
    fn spend(&self, took: Duration);
    /// Asks `gate` whether the caller may create a session. A request's
    /// budget (its [`Session`](crate::Session)) asks for the request's
    /// client; the app's own calls outside a request are not gated.
    fn admit_new_session(&self, gate: &dyn NewSessionGate) -> Result<(), SessionError> {
        let _ = gate;
        Ok(())
    }
}

/// A whole budget for one call outside a request.
struct Single(Duration);

impl Budget for Single {
    fn remaining(&self) -> Duration {
        self.0
    }
    fn spend(&self, _took: Duration) {}
}

/// The store and the validated settings every request's session works
/// with: what [`SessionMiddleware`](crate::SessionMiddleware) hands its
/// requests, and what [`SessionMiddleware::service`](crate::SessionMiddleware::service)
/// hands to code outside a request.
///
/// It also offers the NestJS design's `SessionService` calls
/// ([`get_session`](Self::get_session), [`set_session`](Self::set_session),
/// [`generate_sid`](Self::generate_sid)), with that design's faults fixed:
///
/// - ids come from the OS random source, not `Math.random`;
/// - an id the store does not know is never adopted: a write to it starts a
///   fresh session with a fresh id (no session fixation);
/// - field names starting with `__` (the session's own metadata) are
///   refused, so no caller can move or remove the absolute lifetime;
/// - counting is one atomic operation ([`increment`](Self::increment)), so
///   concurrent requests never lose an update;
/// - every call is one round trip to the store (a write to a session with
///   encryption at rest: two, as the salt is read first), bounded by
///   `session.store_timeout_ms`.
///
/// Cheap to clone; share it (in `web::Data`, say).
#[derive(Debug, Clone)]
pub struct SessionService {
    /// Where sessions live; shared by every clone.
    store: Arc<dyn SessionStore>,
    /// The validated settings; shared by every clone.
    config: Arc<Config>,
}

/// The outcome of [`SessionService::increment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The session that was counted: the caller's own, or a fresh one.
    pub id: SessionId,
    /// The field's value after the increment.
    pub value: i64,
    /// True if a fresh session was created for this call.
    pub is_new: bool,
}

/// A read-only look at one session: see [`SessionService::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// Every user field (metadata left out).
    pub fields: SessionFields,
    /// Time left before the session expires, if it expires.
    pub expires_in: Option<Duration>,
}

impl SessionService {
    pub(crate) fn new(store: Arc<dyn SessionStore>, config: Config) -> Self {
        Self {
            store,
            config: Arc::new(config),
        }
    }

    /// The gate every request's new sessions pass, if any.
    pub(crate) fn gate(&self) -> Option<&dyn NewSessionGate> {
        self.config.gate.as_ref().map(|gate| gate.0.as_ref())
    }

    /// The settings this service was built with, as validated.
    pub fn settings(&self) -> &SessionSettings {
        &self.config.settings
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The store, for health checks.
    pub fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// Loads what the store needs to serve this service's policy (for
    /// Redis, its scripts), so that the first write of every request is
    /// one round trip. Call it once at start-up, after building the
    /// middleware; without it the first write on each Redis node pays one
    /// more round trip, once.
    ///
    /// # Errors
    ///
    /// As the store's [`SessionStore::prepare_policy`].
    pub async fn prepare(&self) -> Result<(), StoreError> {
        self.store.prepare_policy(&self.config.policy).await
    }

    /// Runs one store call within `remaining`, the rest of a budget, and
    /// returns how long it took. With nothing left it sends nothing: a
    /// write must not go out once its caller has been told it failed.
    pub(crate) async fn within<T>(
        remaining: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> (Result<T, StoreError>, Duration) {
        if remaining.is_zero() {
            return (Err(budget_spent()), Duration::ZERO);
        }
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout(remaining, call).await {
            Ok(result) => result,
            Err(_) => Err(budget_spent()),
        };
        (result, started.elapsed())
    }

    /// One call with a whole budget of its own: the calls outside a request.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        Self::within(self.config.store_timeout, call).await.0
    }

    /// The budget of one request's store calls.
    pub(crate) fn budget(&self) -> Duration {
        self.config.store_timeout
    }

    /// A fresh id holding `changes.upserts`, retried on the (astronomically
    /// rare) collision, each try within what `budget` has left. The one
    /// place sessions are created, so the one place a request's new
    /// sessions pass the gate: before anything is written.
    pub(crate) async fn create_fresh(
        &self,
        changes: &Changes,
        policy: &WritePolicy,
        budget: &dyn Budget,
    ) -> Result<SessionId, SessionError> {
        if let Some(gate) = self.gate() {
            budget.admit_new_session(gate)?;
        }
        for _ in 0..FRESH_ID_ATTEMPTS {
            let id = SessionId::generate();
            let (created, took) =
                Self::within(budget.remaining(), self.store.create(&id, changes, policy)).await;
            budget.spend(took);
            if created? {
                metrics::counter!(names::CREATIONS_TOTAL).increment(1);
                log::debug!("created session {id}");
                return Ok(id);
            }
            log::error!("fresh session id {id} collided with an existing session");
        }
        Err(SessionError::IdsExhausted)
    }

    /// A new random session id: the Nest design's `generateSid`, from the OS
    /// random source. See [`SessionId::generate`].
    ///
    /// ```
    /// let id = session::SessionService::generate_sid();
    /// assert_eq!(session::SessionId::parse(id.as_str()), Some(id));
    /// ```
    pub fn generate_sid() -> SessionId {
        SessionId::generate()
    }

    /// The session named by `sid`, decoded as a `T`, or `None` if `sid` is
    /// malformed, unknown or expired: the Nest design's `getSession<T>`.
    /// Reads only: the TTL is not refreshed. One round trip (none for a
    /// malformed `sid`).
    ///
    /// # Errors
    ///
    /// [`SessionError::Decode`] if the session exists but is not a valid `T`;
    /// [`SessionError::Store`] if the store fails.
    pub async fn get_session<T: DeserializeOwned>(
        &self,
        sid: &str,
    ) -> Result<Option<T>, SessionError> {
        let Some(id) = SessionId::parse(sid) else {
            return Ok(None);
        };
        let Some(loaded) = self.call(self.store.load(&id)).await? else {
            return Ok(None);
        };
        codec::decode_fields(&loaded.fields)
            .map(Some)
            .map_err(SessionError::Decode)
    }

    /// Writes `value`'s fields into the session named by `sid` and slides
    /// its TTL to `ttl`, then returns the session's id: the Nest design's
    /// `setSession(sid, value, ttl)`. Fields of the session that `value`
    /// does not name are kept; the absolute lifetime still applies.
    ///
    /// If `sid` is `None`, malformed, unknown or expired, a fresh session
    /// with a fresh id is created instead and that id is returned: a client
    /// can never choose its own id. One round trip (two for an unknown id;
    /// one more with encryption at rest, to read the session's salt).
    /// Every `ttl` runs the same Redis scripts, which take it as an
    /// argument: distinct TTLs load nothing more into Redis.
    ///
    /// # Errors
    ///
    /// [`SessionError::Encode`] if `value` is not a struct or map with at
    /// least one non-null field; [`SessionError::InvalidKey`] if a field is
    /// named `__…`; [`SessionError::Config`] for a `ttl` under a second or
    /// over a year; [`SessionError::Store`] if the store fails, or with
    /// [`StoreError::LimitExceeded`] past the limits (nothing written).
    pub async fn set_session(
        &self,
        sid: Option<&str>,
        value: &impl Serialize,
        ttl: Duration,
    ) -> Result<SessionId, SessionError> {
        let fields = codec::encode_fields(value).map_err(SessionError::Encode)?;
        if fields.is_empty() {
            return Err(SessionError::Encode(CodecError::custom(
                "a session needs at least one non-null field",
            )));
        }
        if let Some((name, _)) = fields.iter().find(|(name, _)| !is_user_field(name)) {
            return Err(SessionError::InvalidKey(name.clone()));
        }
        let changes = Changes {
            upserts: fields,
            ..Changes::default()
        };
        let defaults = self.config.policy;
        // The caller's TTL is this session's idle timeout, as in the Nest
        // design; checked like the setting, so no store meets a TTL it
        // cannot hold. Per call: callers' TTLs share one set of Redis
        // scripts, rather than loading a set per TTL that Redis keeps for
        // good.
        let policy = WritePolicy::new(
            ttl,
            defaults.absolute_timeout(),
            defaults.max_fields(),
            defaults.max_bytes(),
        )?
        .with_ttl_per_call();
        if let Some(id) = sid.and_then(SessionId::parse)
            && self.call(self.store.update(&id, &changes, &policy)).await?
        {
            return Ok(id);
        }
        let budget = Single(self.config.store_timeout);
        self.create_fresh(&changes, &policy, &budget).await
    }

    /// Adds `by` to the integer `field` of the session named by `sid`,
    /// atomically, and slides its TTL.
    ///
    /// With no usable session (no `sid`, or one that is unknown or expired,
    /// or whose `field` holds something other than an integer) a fresh
    /// session is created with `field = by`. The old session, if any, is
    /// left untouched. One round trip; two for an unknown `sid`.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidKey`] for a `__…` field;
    /// [`SessionError::SealedField`] for a field encrypted at rest;
    /// [`SessionError::Store`] if the store fails (unavailable, a backend
    /// fault or a misconfiguration: never a silent fresh session).
    pub async fn increment(
        &self,
        sid: Option<&SessionId>,
        field: &str,
        by: i64,
    ) -> Result<Counted, SessionError> {
        if !is_user_field(field) {
            return Err(SessionError::InvalidKey(field.to_owned()));
        }
        if self.store.seals_field(field) {
            return Err(SessionError::SealedField(field.to_owned()));
        }
        let policy = self.config.policy;
        if let Some(id) = sid {
            match self
                .call(self.store.increment(id, field, by, &policy))
                .await
            {
                Ok(Some(value)) => {
                    return Ok(Counted {
                        id: id.clone(),
                        value,
                        is_new: false,
                    });
                }
                Ok(None) => log::debug!("session {id} is unknown or expired: starting a fresh one"),
                // Only bad data in this one session starts over; a fault of
                // the server or of the deployment is reported.
                Err(StoreError::InvalidData(error)) => {
                    log::warn!(
                        "session {id} cannot count \"{}\" ({}): starting a fresh one",
                        Escaped(field),
                        Escaped(&error)
                    );
                }
                Err(error) => return Err(error.into()),
            }
        }
        let changes = Changes {
            upserts: vec![(field.to_owned(), by.to_string())],
            ..Changes::default()
        };
        let budget = Single(self.config.store_timeout);
        let id = self.create_fresh(&changes, &policy, &budget).await?;
        Ok(Counted {
            id,
            value: by,
            is_new: true,
        })
    }

    /// The fields of the session `sid` and the time before it expires, in one
    /// round trip, without refreshing anything. `None` if there is no such
    /// live session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store fails.
    pub async fn inspect(&self, sid: &SessionId) -> Result<Option<SessionView>, SessionError> {
        let found = self.call(self.store.load(sid)).await?;
        Ok(found.map(|loaded| SessionView {
            fields: loaded.fields,
            expires_in: loaded.ttl,
        }))
    }

    /// Deletes the session named by `sid`. Returns whether it existed. No
    /// request still in flight can bring it back.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store fails.
    pub async fn end_session(&self, sid: &str) -> Result<bool, SessionError> {
        match SessionId::parse(sid) {
            Some(id) => Ok(self.call(self.store.delete(&id)).await?),
            None => Ok(false),
        }
    }
}
