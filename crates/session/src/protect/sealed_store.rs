//! [`SealedStore`]: any [`SessionStore`], with session values encrypted at
//! rest.
//!
//! It seals on the way in and opens on the way out, and passes everything
//! else through, so the store underneath keeps every rule of its own
//! (atomic writes, deletes that win, limits) on the sealed text. What it
//! seals: every user field except the plaintext fields named up front, and
//! the signed-in user and user agent (`__user`, `__ua`). What stays
//! readable, and why, is in the README's "Protecting session data".
//!
//! # The salt
//!
//! Each sealed value is bound to its session by the session's `__salt` (see
//! `envelope.rs`). A new session draws a random one. A session written
//! before encryption was on has none until its first sealed write; its salt
//! is then derived from its id, so two nodes sealing its first values at
//! once agree on it without a lock. Once stored, a salt never changes, and
//! a renewal's `RENAME` carries it along.
//!
//! A write learns the salt from [`Changes::salt`], which the session layer
//! fills from the request's load. A write to a session the request did not
//! read (a blind `insert`) loads it first: one more round trip.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::envelope::{self, OpenError};
use super::key_ring::{KeyRing, URL_SAFE};
use crate::metric_names as names;
use crate::store::{
    AGENT_FIELD, Changes, LoadedSession, Renewal, SALT_FIELD, SessionHandle, SessionStore,
    StoreError, USER_FIELD, UserEntry, WritePolicy, is_user_field,
};
use crate::{SessionId, SessionSettings};

/// Encrypts session values at rest around another store: see the module
/// docs. The session middleware builds one when `session.encryption.keys`
/// is set; build one yourself to use a store directly.
///
/// ```
/// use session::{KeyRing, MemorySessionStore, SealedStore};
/// let key = format!("k1:{}", "A".repeat(43));
/// let ring = KeyRing::parse("session.encryption.keys", &[key]).unwrap().unwrap();
/// let store = SealedStore::new(MemorySessionStore::new(), ring)
///     .plaintext_fields(["count"])
///     .accept_plaintext(true);
/// # let _ = store;
/// ```
#[derive(Debug, Clone)]
pub struct SealedStore {
    inner: Arc<dyn SessionStore>,
    ring: Arc<KeyRing>,
    /// User fields kept as plain text, for `incr` and `compare_and_set`.
    plaintext: Arc<HashSet<String>>,
    /// Whether a plain (never sealed) value still reads: the migration
    /// switch, `session.encryption.accept_plaintext`.
    accept_plaintext: bool,
    /// Whether writes seal (`session.encryption.seal_writes`): off for the
    /// first deploy of a rollout, so that every node can open before any
    /// node seals.
    seal_writes: bool,
}

/// Why a loaded session does not open: an [`OpenError`], or a plain value
/// where only sealed ones are accepted.
#[derive(Debug, Clone, Copy)]
enum Unreadable {
    Open(OpenError),
    Plaintext,
}

impl Unreadable {
    fn reason(self) -> &'static str {
        match self {
            Self::Open(error) => error.reason(),
            Self::Plaintext => "plaintext",
        }
    }
}

impl SealedStore {
    /// `inner` with every user field sealed under `ring`'s first key, plain
    /// values refused where a sealed one belongs (see
    /// [`SealedStore::accept_plaintext`]), and no plaintext fields.
    pub fn new(inner: impl SessionStore, ring: KeyRing) -> Self {
        Self::over(Arc::new(inner), Arc::new(ring))
    }

    /// As [`SealedStore::new`], with a ring shared with other stores.
    pub fn with_shared_ring(inner: impl SessionStore, ring: Arc<KeyRing>) -> Self {
        Self::over(Arc::new(inner), ring)
    }

    pub(crate) fn over(inner: Arc<dyn SessionStore>, ring: Arc<KeyRing>) -> Self {
        Self {
            inner,
            ring,
            plaintext: Arc::new(HashSet::new()),
            accept_plaintext: false,
            seal_writes: true,
        }
    }

    /// The user fields kept as plain text: counters for
    /// [`crate::Session::incr`] (Redis must see the integer to add to it)
    /// and state for [`crate::Session::compare_and_set`] (Redis compares
    /// the stored text). `session.encryption.plaintext_fields`.
    #[must_use]
    pub fn plaintext_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.plaintext = Arc::new(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Whether values stored before encryption was on still read (true),
    /// or count as values that do not decrypt (false): turn it off as the
    /// last step of a migration. `session.encryption.accept_plaintext`.
    #[must_use]
    pub fn accept_plaintext(mut self, accept: bool) -> Self {
        self.accept_plaintext = accept;
        self
    }

    /// Whether writes seal (true), or only reads open (false): the first
    /// deploy of a rollout, so that no node meets a sealed value it cannot
    /// open. `session.encryption.seal_writes`.
    #[must_use]
    pub fn seal_writes(mut self, seal: bool) -> Self {
        self.seal_writes = seal;
        self
    }

    /// The ring's key ids, current first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.ring.ids()
    }

    /// Whether `field` is sealed: any user field not named plaintext, and
    /// the user and user-agent metadata.
    fn seals(&self, field: &str) -> bool {
        if is_user_field(field) {
            !self.plaintext.contains(field)
        } else {
            field == USER_FIELD || field == AGENT_FIELD
        }
    }

    /// Opens one stored value, or says why not. A plaintext field that
    /// holds a sealed value (it was sealed before the field was named
    /// plaintext) still opens.
    fn open_value(
        &self,
        salt: Option<&str>,
        field: &str,
        stored: String,
    ) -> Result<String, Unreadable> {
        if envelope::is_sealed(&stored) {
            // A salt is what `new_salt` or `derived_salt` makes: anything
            // else was not written by this crate.
            let salt = salt
                .filter(|salt| envelope::is_salt(salt))
                .ok_or(Unreadable::Open(OpenError::Malformed))?;
            return envelope::open(&self.ring, salt, field, &stored).map_err(Unreadable::Open);
        }
        if self.seals(field) && !self.accept_plaintext {
            return Err(Unreadable::Plaintext);
        }
        Ok(stored)
    }

    /// The session with its values opened, or `None` (counted and logged
    /// once) if any value does not open: it counts as gone. It is not
    /// deleted: a node whose ring is behind must not destroy a session
    /// that the rest of the fleet reads.
    fn open_session(&self, id: &SessionId, mut loaded: LoadedSession) -> Option<LoadedSession> {
        let salt = loaded.salt.clone();
        let opened = (|| -> Result<LoadedSession, Unreadable> {
            // In place: no second map.
            for (field, stored) in &mut loaded.fields {
                *stored = self.open_value(salt.as_deref(), field, std::mem::take(stored))?;
            }
            if let Some(user) = loaded.user.take() {
                loaded.user = Some(self.open_value(salt.as_deref(), USER_FIELD, user)?);
            }
            if let Some(agent) = loaded.user_agent.take() {
                loaded.user_agent = Some(self.open_value(salt.as_deref(), AGENT_FIELD, agent)?);
            }
            Ok(loaded)
        })();
        match opened {
            Ok(loaded) => Some(loaded),
            Err(why) => {
                metrics::counter!(names::DECRYPT_FAILURES_TOTAL, "reason" => why.reason())
                    .increment(1);
                log::warn!(
                    "session {id} has a value that does not decrypt ({}): treated as gone",
                    why.reason()
                );
                None
            }
        }
    }

    /// Whether `changes` sets anything this store seals.
    fn needs_seal(&self, changes: &Changes) -> bool {
        self.seal_writes && changes.upserts.iter().any(|(field, _)| self.seals(field))
    }

    /// `changes` with its values sealed under `salt`, and the salt stored
    /// too when the session may not hold it yet.
    fn sealed(&self, changes: &Changes, salt: &str, store_salt: bool) -> Changes {
        let mut sealed = changes.clone();
        for (field, value) in &mut sealed.upserts {
            if self.seals(field) {
                *value = envelope::seal(&self.ring, salt, field, value);
            }
        }
        if store_salt {
            sealed
                .upserts
                .push((SALT_FIELD.to_owned(), salt.to_owned()));
        }
        sealed
    }

    /// The salt to seal `id`'s changes with, and whether the session may
    /// not hold it yet; `None` if the session is gone. Loads the session
    /// unless the request already read its salt.
    async fn salt_for(
        &self,
        id: &SessionId,
        changes: &Changes,
    ) -> Result<Option<(String, bool)>, StoreError> {
        let stored = match &changes.salt {
            Some(salt) => Some(salt.clone()),
            None => match self.inner.load(id).await? {
                Some(loaded) => loaded.salt,
                None => return Ok(None),
            },
        };
        match stored {
            // Sealing under a salt no read accepts would lose the value.
            Some(salt) if !envelope::is_salt(&salt) => Err(StoreError::InvalidData(
                "the session's __salt is not a salt".into(),
            )),
            Some(salt) => Ok(Some((salt, false))),
            None => Ok(Some((derived_salt(id), true))),
        }
    }

    /// Session `id` field by field, each opened where it can be and the
    /// reason where it cannot: for an operator's tool, which must show
    /// what a request would refuse. Reads only (one load), and counts
    /// nothing.
    ///
    /// # Errors
    ///
    /// As [`SessionStore::load`] of the store underneath.
    pub async fn inspect(&self, id: &SessionId) -> Result<Option<Inspection>, StoreError> {
        let Some(loaded) = self.inner.load(id).await? else {
            return Ok(None);
        };
        let salt = loaded.salt.as_deref();
        let mut fields: Vec<InspectedField> = loaded
            .fields
            .iter()
            .map(|(name, stored)| self.inspect_field(salt, name, stored))
            .collect();
        for (name, stored) in [
            (USER_FIELD, &loaded.user),
            (AGENT_FIELD, &loaded.user_agent),
        ] {
            if let Some(stored) = stored {
                fields.push(self.inspect_field(salt, name, stored));
            }
        }
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some(Inspection {
            fields,
            created: loaded.created,
            ttl: loaded.ttl,
            handle: loaded.handle,
            salted: loaded.salt.is_some(),
        }))
    }

    fn inspect_field(&self, salt: Option<&str>, name: &str, stored: &str) -> InspectedField {
        let key_id = envelope::key_id_of(stored).map(str::to_owned);
        let state = match self.open_value(salt, name, stored.to_owned()) {
            Ok(value) if envelope::is_sealed(stored) => FieldState::Opened {
                key_id: key_id.unwrap_or_default(),
                value,
            },
            Ok(value) => FieldState::Plain(value),
            Err(why) => FieldState::Unreadable {
                key_id,
                reason: why.reason(),
            },
        };
        InspectedField {
            name: name.to_owned(),
            state,
        }
    }

    fn refuse_sealed(field: &str) -> StoreError {
        StoreError::Misconfigured(
            format!(
                "field {field:?} is encrypted at rest: incr and compare_and_set need it named in \
                 session.encryption.plaintext_fields"
            )
            .into(),
        )
    }
}

/// One session as [`SealedStore::inspect`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// Its user fields, and the signed-in user and user agent (`__user`,
    /// `__ua`), by name.
    pub fields: Vec<InspectedField>,
    /// When it was created, if stamped.
    pub created: Option<std::time::SystemTime>,
    /// Time left before it expires.
    pub ttl: Option<std::time::Duration>,
    /// Its handle in its user's index, if signed in.
    pub handle: Option<SessionHandle>,
    /// Whether it holds a `__salt`, so that sealed values can open.
    pub salted: bool,
}

/// One field of an [`Inspection`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InspectedField {
    /// The field's name.
    pub name: String,
    /// What it holds.
    pub state: FieldState,
}

/// What one stored field holds, as the ring reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldState {
    /// A plain value (a plaintext field, or one written before encryption).
    Plain(String),
    /// A sealed value, opened.
    Opened {
        /// The key that sealed it.
        key_id: String,
        /// Its plaintext.
        value: String,
    },
    /// A value no request would accept: the session counts as gone.
    Unreadable {
        /// The key id the value names, if it names one.
        key_id: Option<String>,
        /// `unknown_key`, `tampered`, `malformed` or `plaintext`.
        reason: &'static str,
    },
}

/// The salt of a session that had none: derived from its id, so that every
/// node draws the same one (see the module docs). SHA-256 keeps it from
/// revealing the id.
fn derived_salt(id: &SessionId) -> String {
    let mut hash = Sha256::new();
    hash.update(b"session/v1 salt\0");
    hash.update(id.as_str().as_bytes());
    URL_SAFE.encode(&hash.finalize()[..16])
}

#[async_trait]
impl SessionStore for SealedStore {
    async fn load(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        Ok(self
            .inner
            .load(id)
            .await?
            .and_then(|loaded| self.open_session(id, loaded)))
    }

    async fn load_from_primary(&self, id: &SessionId) -> Result<Option<LoadedSession>, StoreError> {
        Ok(self
            .inner
            .load_from_primary(id)
            .await?
            .and_then(|loaded| self.open_session(id, loaded)))
    }

    fn reads_from_replicas(&self) -> bool {
        self.inner.reads_from_replicas()
    }

    async fn create(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        if !self.seal_writes {
            return self.inner.create(id, changes, policy).await;
        }
        // Every new session gets a salt, sealed values or not, so that a
        // later write never has to derive one: the one the caller drew (so
        // that it knows it), else a fresh one.
        let salt = changes.salt.clone().unwrap_or_else(envelope::new_salt);
        let sealed = self.sealed(changes, &salt, true);
        self.inner.create(id, &sealed, policy).await
    }

    async fn update(
        &self,
        id: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<bool, StoreError> {
        if !self.needs_seal(changes) {
            return self.inner.update(id, changes, policy).await;
        }
        let Some((salt, store_salt)) = self.salt_for(id, changes).await? else {
            return Ok(false);
        };
        let sealed = self.sealed(changes, &salt, store_salt);
        self.inner.update(id, &sealed, policy).await
    }

    async fn renew(
        &self,
        old: &SessionId,
        new: &SessionId,
        changes: &Changes,
        policy: &WritePolicy,
    ) -> Result<Renewal, StoreError> {
        if !self.needs_seal(changes) {
            return self.inner.renew(old, new, changes, policy).await;
        }
        let Some((salt, store_salt)) = self.salt_for(old, changes).await? else {
            return Ok(Renewal::Missing);
        };
        let sealed = self.sealed(changes, &salt, store_salt);
        self.inner.renew(old, new, &sealed, policy).await
    }

    async fn increment(
        &self,
        id: &SessionId,
        field: &str,
        by: i64,
        policy: &WritePolicy,
    ) -> Result<Option<i64>, StoreError> {
        if self.seals(field) {
            return Err(Self::refuse_sealed(field));
        }
        self.inner.increment(id, field, by, policy).await
    }

    async fn compare_and_set(
        &self,
        id: &SessionId,
        field: &str,
        expected: Option<&str>,
        new: Option<&str>,
        policy: &WritePolicy,
    ) -> Result<Option<bool>, StoreError> {
        if self.seals(field) {
            return Err(Self::refuse_sealed(field));
        }
        self.inner
            .compare_and_set(id, field, expected, new, policy)
            .await
    }

    fn seals_field(&self, field: &str) -> bool {
        self.seals(field)
    }

    fn hashes_ids(&self) -> bool {
        self.inner.hashes_ids()
    }

    fn id_for_renewal(&self, old: &SessionId) -> SessionId {
        self.inner.id_for_renewal(old)
    }

    async fn delete(&self, id: &SessionId) -> Result<bool, StoreError> {
        self.inner.delete(id).await
    }

    async fn load_many(&self, ids: &[SessionId]) -> Result<Vec<Option<LoadedSession>>, StoreError> {
        let loaded = self.inner.load_many(ids).await?;
        Ok(ids
            .iter()
            .zip(loaded)
            .map(|(id, loaded)| {
                loaded.map(|loaded| {
                    // Alive but unreadable here: listed without its sealed
                    // values, never taken for gone (its index entry must
                    // stay, or "sign out everywhere" could not find it).
                    let mut unreadable = loaded.clone();
                    self.open_session(id, loaded).unwrap_or_else(|| {
                        unreadable.fields.clear();
                        unreadable.user = None;
                        unreadable.user_agent = None;
                        unreadable.sealed_unreadable = true;
                        unreadable
                    })
                })
            })
            .collect())
    }

    async fn user_epoch(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.user_epoch(user).await
    }

    async fn join_user(
        &self,
        user: &str,
        epoch: u64,
        entry: &UserEntry,
        policy: &WritePolicy,
        cap: usize,
    ) -> Result<Option<Vec<UserEntry>>, StoreError> {
        self.inner.join_user(user, epoch, entry, policy, cap).await
    }

    async fn user_entries(
        &self,
        user: &str,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        self.inner.user_entries(user, policy).await
    }

    async fn revoke_user(
        &self,
        user: &str,
        spare: Option<&SessionHandle>,
        policy: &WritePolicy,
    ) -> Result<Vec<UserEntry>, StoreError> {
        self.inner.revoke_user(user, spare, policy).await
    }

    async fn rejoin_user(
        &self,
        user: &str,
        handle: &SessionHandle,
        old: &SessionId,
        new: &SessionId,
    ) -> Result<bool, StoreError> {
        self.inner.rejoin_user(user, handle, old, new).await
    }

    async fn take_user_entry(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<Option<UserEntry>, StoreError> {
        self.inner.take_user_entry(user, handle).await
    }

    async fn drop_user_entries(
        &self,
        user: &str,
        handles: &[SessionHandle],
    ) -> Result<(), StoreError> {
        self.inner.drop_user_entries(user, handles).await
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        self.inner.prepare().await
    }

    async fn prepare_policy(&self, policy: &WritePolicy) -> Result<(), StoreError> {
        self.inner.prepare_policy(policy).await
    }

    async fn check_health(&self) -> Result<(), StoreError> {
        self.inner.check_health().await
    }
}

/// The store the middleware runs on: `store` sealed when `settings` name
/// encryption keys.
pub(crate) fn seal_if_configured(
    store: Arc<dyn SessionStore>,
    ring: Option<Arc<KeyRing>>,
    settings: &SessionSettings,
) -> Arc<dyn SessionStore> {
    match ring {
        Some(ring) => {
            if settings.encryption.accept_plaintext {
                log::warn!(
                    "session.encryption.accept_plaintext is on: a plain value where a sealed one \
                     belongs (a user field, the signed-in user) is accepted, so whoever can write \
                     to Redis can forge one; turn it off once no session written before \
                     encryption can be alive (session.absolute_timeout_secs after sealing began)"
                );
            }
            Arc::new(
                SealedStore::over(store, ring)
                    .plaintext_fields(settings.encryption.plaintext_fields.iter().cloned())
                    .accept_plaintext(settings.encryption.accept_plaintext)
                    .seal_writes(settings.encryption.seal_writes),
            )
        }
        None => store,
    }
}
