//! [`SessionService`]: the NestJS design's `SessionService`, made safe.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::{DeserializeOwned, Error as _};

use crate::codec::{self, CodecError};
use crate::store::{Changes, WritePolicy};
use crate::{SessionError, SessionFields, SessionId, SessionSettings, SessionStore, StoreError};

/// How often a fresh id may collide before we give up. Each collision has a
/// chance of about 2^-122; a second one means a broken random source.
const FRESH_ID_ATTEMPTS: usize = 3;

/// Reads, writes and counts sessions in a [`SessionStore`].
///
/// This is the Rust twin of the NestJS `SessionService`, with its faults
/// fixed:
///
/// - ids come from the OS random source ([`SessionId::generate`]), not
///   `Math.random`;
/// - an id the store does not know is never adopted: writes to it start a
///   fresh session with a fresh id (no session fixation);
/// - counting is one atomic operation, so concurrent requests never lose an
///   update;
/// - every operation is one round trip to the store.
///
/// Cheap to clone; build it once and share it (e.g. in `web::Data`).
#[derive(Debug, Clone)]
pub struct SessionService {
    /// Where sessions live; shared by every clone.
    store: Arc<dyn SessionStore>,
    /// Key layout, TTL and cookie settings; shared by every clone.
    settings: Arc<SessionSettings>,
}

/// The outcome of [`SessionService::increment`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The session that was counted: the request's own, or a fresh one.
    pub id: SessionId,
    /// The field's value after the increment.
    pub value: i64,
    /// True if a fresh session was created for this request.
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
    /// A service over `store` with `settings`.
    pub fn new(store: Arc<dyn SessionStore>, settings: SessionSettings) -> Self {
        Self {
            store,
            settings: Arc::new(settings),
        }
    }

    /// The settings this service was built with.
    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// The store, for health checks.
    pub fn store(&self) -> &dyn SessionStore {
        self.store.as_ref()
    }

    /// A new random session id. See [`SessionId::generate`].
    pub fn generate_sid() -> SessionId {
        SessionId::generate()
    }

    /// The session named by `sid`, decoded as a `T`, or `None` if `sid` is
    /// malformed, unknown or expired. Reads only: the TTL is not refreshed.
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
        let Some(loaded) = self.store.load(&id).await? else {
            return Ok(None);
        };
        codec::decode_fields(&loaded.fields)
            .map(Some)
            .map_err(SessionError::Decode)
    }

    /// Writes `value`'s fields into the session named by `sid`, sliding its
    /// TTL, and returns the session's id.
    ///
    /// If `sid` is `None`, malformed, unknown or expired, a fresh session
    /// with a fresh id is created instead and that id is returned: a client
    /// can never choose its own id. Fields of the session that `value` does
    /// not name are kept.
    ///
    /// # Errors
    ///
    /// [`SessionError::Encode`] if `value` is not a struct or map with at
    /// least one non-null field; [`SessionError::Store`] if the store fails.
    pub async fn set_session(
        &self,
        sid: Option<&str>,
        value: &impl Serialize,
        ttl: Duration,
    ) -> Result<SessionId, SessionError> {
        let owned = codec::encode_fields(value).map_err(SessionError::Encode)?;
        if owned.is_empty() {
            return Err(SessionError::Encode(CodecError::custom(
                "a session needs at least one non-null field",
            )));
        }
        let changes = Changes {
            upserts: owned.into_iter().collect(),
            ..Changes::default()
        };
        // The caller's TTL is this session's idle timeout, as in the NestJS
        // `setSession(sid, value, ttl)`; the absolute lifetime still applies.
        let policy = WritePolicy {
            idle_timeout: ttl,
            ..self.settings.write_policy()
        };
        if let Some(id) = sid.and_then(SessionId::parse)
            && self.store.update(&id, &changes, &policy).await?
        {
            return Ok(id);
        }
        self.create_fresh(&changes, &policy).await
    }

    /// Adds `by` to the integer `field` of the session named by `sid`,
    /// atomically, and restarts its TTL (the session's idle timeout).
    ///
    /// With no usable session (no `sid`, or one that is malformed, unknown,
    /// expired, or whose `field` is not an integer) a fresh session is
    /// created with `field = by`. The old session, if any, is left untouched.
    ///
    /// One round trip for an existing session or a request without `sid`;
    /// two for an unknown `sid` (the failed increment, then the creation).
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store is unavailable.
    pub async fn increment(
        &self,
        sid: Option<&SessionId>,
        field: &str,
        by: i64,
    ) -> Result<Counted, SessionError> {
        let policy = self.settings.write_policy();
        if let Some(id) = sid {
            match self.store.increment(id, field, by, &policy).await {
                Ok(Some(value)) => {
                    return Ok(Counted {
                        id: id.clone(),
                        value,
                        is_new: false,
                    });
                }
                Ok(None) => log::debug!("session {id} is unknown or expired: starting a fresh one"),
                Err(StoreError::InvalidData(error)) => {
                    log::warn!(
                        "session {id} cannot count {field:?} ({error}): starting a fresh one"
                    );
                }
                Err(error) => return Err(error.into()),
            }
        }
        let changes = Changes {
            upserts: vec![(field.to_owned(), by.to_string())],
            ..Changes::default()
        };
        let id = self.create_fresh(&changes, &policy).await?;
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
        let found = self.store.load(sid).await?;
        Ok(found.map(|loaded| SessionView {
            fields: loaded.fields,
            expires_in: loaded.ttl,
        }))
    }

    /// Deletes the session named by `sid`. Returns whether it existed.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the store fails.
    pub async fn end_session(&self, sid: &str) -> Result<bool, SessionError> {
        match SessionId::parse(sid) {
            Some(id) => Ok(self.store.delete(&id).await?),
            None => Ok(false),
        }
    }

    async fn create_fresh(
        &self,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<SessionId, SessionError> {
        for _ in 0..FRESH_ID_ATTEMPTS {
            let id = SessionId::generate();
            if self.store.create(&id, changes, policy).await? {
                log::debug!("created session {id}");
                return Ok(id);
            }
            log::error!("fresh session id {id} collided with an existing session");
        }
        Err(SessionError::IdsExhausted)
    }
}
