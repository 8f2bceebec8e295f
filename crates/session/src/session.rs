//! [`Session`]: the per-request handle that handlers extract.
//!
//! The handle records what the handler reads and changes; `commit.rs`
//! writes the changes after the handler, in one round trip. Nothing touches
//! the store until the handler asks for something the request does not
//! already know, so a route that never uses its `Session` costs nothing.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::metric_names as names;
use crate::service::Budget as _;
use crate::store::{Changes, LoadedSession, is_user_field, parse_redis_integer};
use crate::{SessionError, SessionFields, SessionId, SessionService, StoreError};

/// The session of the current request. Extract it in a handler on a route
/// wrapped by [`crate::SessionMiddleware`].
///
/// Cheap to clone; clones share one state. It lives on the request's worker
/// thread (it is not `Send`), like the request itself.
///
/// # Reads
///
/// [`Session::get`], [`Session::entries`] and [`Session::get_as`] load the
/// session on first use: one round trip (`HGETALL` + `PTTL`, pipelined), and
/// none for a request without a session cookie. Later reads in the same
/// request are served from that snapshot, overlaid with this request's own
/// changes.
///
/// # Writes
///
/// [`Session::insert`], [`Session::remove`], [`Session::clear`],
/// [`Session::purge`] and [`Session::renew`] only record; the middleware
/// commits them after the handler, as one atomic script, and only the fields
/// that changed. Two requests that change different fields of one session
/// therefore never clobber each other.
///
/// [`Session::incr`] and [`Session::compare_and_set`] act at once, atomically
/// in the store, because their answer depends on what every other request
/// did: concurrent increments never lose an update.
///
/// # Purge is final
///
/// After [`Session::purge`], the cookie's session is deleted when the
/// request commits, whatever the handler does next: `insert`, `incr` and
/// `compare_and_set` fail with [`SessionError::Purged`], and `remove`,
/// `clear`, `renew` and `start_over` do nothing. A handler that wants a
/// fresh session after a logout answers, and the next request starts one.
///
/// # Time
///
/// Every store call of one request, retries included, shares one budget:
/// `session.store_timeout_ms` of time spent waiting on the store (the
/// handler's own work does not count). A call that would start past it is
/// not sent, and one that runs past it is cut short; either fails with
/// [`StoreError::Unavailable`] (a 503).
#[derive(Clone)]
pub struct Session(pub(crate) Rc<RefCell<State>>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.borrow();
        f.debug_struct("Session")
            .field("id", &state.id)
            .field("changed_fields", &state.changes.len())
            .field("purged", &state.purged)
            .finish_non_exhaustive()
    }
}

/// What the request did to its session so far: see [`Session::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionStatus {
    /// Nothing was written or recorded (reads do not count).
    Unchanged,
    /// Fields were written, or changes are recorded for the commit, or the
    /// request created the session.
    Changed,
    /// The session moves to a fresh id at commit ([`Session::renew`]).
    Renewed,
    /// The session ends at commit ([`Session::purge`]).
    Purged,
}

/// What the request knows of the stored session.
#[derive(Debug)]
pub(crate) enum Snapshot {
    /// Not read yet.
    Unknown,
    /// There is no live session under the request's id (or no id at all).
    Absent,
    /// Read once, or created by this request.
    Live(LoadedSession),
}

impl crate::service::Budget for Session {
    fn remaining(&self) -> Duration {
        let state = self.0.borrow();
        state.sessions.budget().saturating_sub(state.spent)
    }

    fn spend(&self, took: Duration) {
        self.0.borrow_mut().spent += took;
    }

    fn admit_new_session(&self, gate: &dyn crate::NewSessionGate) -> Result<(), SessionError> {
        let client = self.0.borrow().client.address(gate);
        gate.admit(client).map_err(|retry_after| {
            metrics::counter!(names::NEW_SESSIONS_REFUSED_TOTAL).increment(1);
            SessionError::TooManyNewSessions { retry_after }
        })
    }
}

/// One request's session state, shared by the clones of its [`Session`].
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) sessions: SessionService,
    /// The session's id: the cookie's, or one issued during this request.
    /// After a purge it never changes again: it is what the commit deletes.
    pub(crate) id: Option<SessionId>,
    /// The id came from this request (a new session or a renewal): the
    /// response must carry a cookie.
    pub(crate) issued: bool,
    /// The request came with a cookie that names no live session: the
    /// response should clear it unless a session is created.
    pub(crate) stale_cookie: bool,
    pub(crate) snapshot: Snapshot,
    /// Data was read from the stored session. If the session is gone at
    /// commit, the changes may derive from a dead session and are dropped.
    pub(crate) observed: bool,
    /// Pending changes: `Some` sets, `None` deletes.
    pub(crate) changes: BTreeMap<String, Option<String>>,
    /// Delete every user field first.
    pub(crate) cleared: bool,
    pub(crate) purged: bool,
    pub(crate) renew: bool,
    /// An immediate write (incr, compare_and_set) already saw to the TTL
    /// (slid it, if it was due).
    pub(crate) written: bool,
    /// The time this request's store calls took so far: the budget counts
    /// time spent waiting on the store, not the handler's own work.
    pub(crate) spent: Duration,
    /// The cookie's id as the request brought it. Never changes, so that a
    /// purge deletes it whatever `start_over` did to `id`.
    pub(crate) cookie_id: Option<SessionId>,
    /// A sign-in to carry out at commit (see `sign_in.rs`).
    pub(crate) sign_in: Option<crate::sign_in::SignIn>,
    /// The request's `User-Agent`, kept for a sign-in (a cheap clone of
    /// the header's bytes).
    pub(crate) user_agent: Option<actix_web::http::header::HeaderValue>,
    /// The cookie was signed by a key that is no longer current: the
    /// response sends it signed anew, so that the old key can be dropped.
    pub(crate) resign_cookie: bool,
    /// The snapshot came from the store's source of truth (or this request
    /// made it), not from a replica that may lag: see
    /// `ensure_loaded_from_primary`. Only read where loads may be stale.
    pub(crate) from_primary: bool,
    /// Who the request's client is, for the new-session gate: captured
    /// when the session is opened, only if a gate is set (see `gate.rs`).
    pub(crate) client: crate::gate::Client,
}

/// When a session was created and last used, for pages like "your session".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// When the session was created (`None` for a session written by a node
    /// that does not record it, until a Rust node first writes it).
    pub created: Option<SystemTime>,
    /// When its TTL was last refreshed: precise to the touch interval
    /// (`session.touch_after_fraction` of the idle timeout), since a
    /// request inside it refreshes nothing.
    pub last_seen: Option<SystemTime>,
    /// Time left before it expires unless used again.
    pub expires_in: Option<Duration>,
}

impl Session {
    /// The handle for one request. `id` is the cookie's id, if it sent one.
    pub(crate) fn new(sessions: SessionService, id: Option<SessionId>) -> Self {
        let id_for_cookie = id.clone();
        let snapshot = if id.is_some() {
            Snapshot::Unknown
        } else {
            Snapshot::Absent
        };
        Self(Rc::new(RefCell::new(State {
            sessions,
            id,
            issued: false,
            stale_cookie: false,
            snapshot,
            observed: false,
            changes: BTreeMap::new(),
            cleared: false,
            purged: false,
            renew: false,
            written: false,
            spent: Duration::ZERO,
            cookie_id: id_for_cookie,
            sign_in: None,
            user_agent: None,
            resign_cookie: false,
            from_primary: false,
            client: crate::gate::Client::default(),
        })))
    }

    /// What the request did to its session so far. Reads never count;
    /// a purge wins over everything, then a renewal.
    pub fn status(&self) -> SessionStatus {
        let state = self.0.borrow();
        if state.purged {
            SessionStatus::Purged
        } else if state.renew {
            SessionStatus::Renewed
        } else if state.written || state.cleared || !state.changes.is_empty() {
            SessionStatus::Changed
        } else {
            SessionStatus::Unchanged
        }
    }

    /// Whether the session holds `key`, as [`Session::get`] would see it.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn contains_key(&self, key: &str) -> Result<bool, SessionError> {
        {
            let state = self.0.borrow();
            if let Some(pending) = state.changes.get(key) {
                return Ok(pending.is_some());
            }
            if state.cleared || state.purged {
                return Ok(false);
            }
        }
        self.ensure_loaded().await?;
        let state = self.0.borrow();
        Ok(matches!(&state.snapshot, Snapshot::Live(loaded) if loaded.fields.contains_key(key)))
    }

    /// Runs one store call within what is left of this request's budget
    /// (see "Time" above), and counts its time against the budget.
    pub(crate) async fn within<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let (result, took) = SessionService::within(self.remaining(), call).await;
        self.spend(took);
        result
    }

    /// The current session id, if there is one: the cookie's, or one issued
    /// during this request. Log it only through its `Display`, which shows a
    /// prefix.
    pub fn id(&self) -> Option<SessionId> {
        self.0.borrow().id.clone()
    }

    /// The value of `key`, or `None` if the session or the field is absent.
    ///
    /// # Errors
    ///
    /// [`SessionError::Decode`] if the field does not parse as a `T`;
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionError> {
        {
            let state = self.0.borrow();
            if let Some(pending) = state.changes.get(key) {
                return decode_opt(pending.as_deref());
            }
            if state.cleared || state.purged {
                return Ok(None);
            }
        }
        self.ensure_loaded().await?;
        let state = self.0.borrow();
        match &state.snapshot {
            Snapshot::Live(loaded) => decode_opt(loaded.fields.get(key).map(String::as_str)),
            _ => Ok(None),
        }
    }

    /// Every user field as stored text: the stored session overlaid with
    /// this request's changes. Empty if there is no session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn entries(&self) -> Result<SessionFields, SessionError> {
        let needs_load = {
            let state = self.0.borrow();
            !(state.cleared || state.purged)
        };
        if needs_load {
            self.ensure_loaded().await?;
        }
        let state = self.0.borrow();
        let mut fields = match &state.snapshot {
            Snapshot::Live(loaded) if !state.cleared && !state.purged => loaded.fields.clone(),
            _ => SessionFields::new(),
        };
        for (key, change) in &state.changes {
            match change {
                Some(value) => fields.insert(key.clone(), value.clone()),
                None => fields.remove(key),
            };
        }
        Ok(fields)
    }

    /// The whole session decoded as one struct `S`, field by field (see
    /// the crate docs' "Data layout"), or `None` if there is no session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Decode`] if the fields do not form an `S`;
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn get_as<S: DeserializeOwned>(&self) -> Result<Option<S>, SessionError> {
        let fields = self.entries().await?;
        if fields.is_empty() && !self.is_live() {
            return Ok(None);
        }
        codec::decode_fields(&fields)
            .map(Some)
            .map_err(SessionError::Decode)
    }

    /// When the session was created and last used, and when it expires;
    /// `None` if there is no session.
    ///
    /// # Errors
    ///
    /// [`SessionError::Store`] if the session could not be loaded.
    pub async fn times(&self) -> Result<Option<SessionTimes>, SessionError> {
        self.ensure_loaded().await?;
        let state = self.0.borrow();
        Ok(match &state.snapshot {
            Snapshot::Live(loaded) if !state.purged => Some(SessionTimes {
                created: loaded.created,
                last_seen: loaded.seen,
                expires_in: loaded.ttl,
            }),
            _ => None,
        })
    }

    /// Sets `key` to `value` when the request commits. Strings and numbers
    /// are stored as plain text, anything else as JSON; `None` or `()`
    /// removes the field.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidKey`] for an empty or reserved name;
    /// [`SessionError::Purged`] after [`Session::purge`];
    /// [`SessionError::Encode`] if serde fails; [`SessionError::Store`] with
    /// [`StoreError::LimitExceeded`] if this field alone, or the number of
    /// fields this request sets, is over the limits. The full limits are
    /// checked again, atomically, at commit.
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionError> {
        check_key(key)?;
        self.check_not_purged()?;
        let encoded = codec::encode_value(value).map_err(SessionError::Encode)?;
        let mut state = self.0.borrow_mut();
        let policy = state.sessions.config().policy;
        if let Some(text) = &encoded
            && key.len() + text.len() > policy.max_bytes()
        {
            return Err(limit(crate::store::Limit::Bytes(policy.max_bytes())));
        }
        // Only sets count: removals never grow a session.
        let sets = state
            .changes
            .values()
            .filter(|change| change.is_some())
            .count();
        let already_set = matches!(state.changes.get(key), Some(Some(_)));
        if !already_set && sets >= policy.max_fields() {
            return Err(limit(crate::store::Limit::Fields(policy.max_fields())));
        }
        state.changes.insert(key.to_owned(), encoded);
        Ok(())
    }

    /// Removes `key` when the request commits. Any number of removals is
    /// applied whole: the store deletes in slices, after its checks.
    pub fn remove(&self, key: &str) {
        let mut state = self.0.borrow_mut();
        if is_user_field(key) && !state.purged {
            state.changes.insert(key.to_owned(), None);
        }
    }

    /// Removes every user field when the request commits. The session itself
    /// (its id, creation time and TTL) lives on; see [`Session::purge`] to
    /// end it.
    pub fn clear(&self) {
        let mut state = self.0.borrow_mut();
        if state.purged {
            return;
        }
        state.cleared = true;
        state.changes.clear();
    }

    /// Ends the session: it is deleted from the store when the request
    /// commits (even if the handler then fails) and the cookie is expired.
    /// No request still in flight can bring it back: their writes find it
    /// gone and write nothing. Final for this request: see "Purge is
    /// final" above.
    pub fn purge(&self) {
        let mut state = self.0.borrow_mut();
        state.purged = true;
        state.changes.clear();
        state.sign_in = None;
    }

    /// Moves the session to a fresh id when the request commits, keeping its
    /// data, and sends the new id: call it when the user's privileges change
    /// (login), so that an id planted or seen before cannot ride along.
    ///
    /// The move is one atomic script (`RENAME` + the request's changes), and
    /// it is safe on Redis Cluster because the new id is drawn so that its
    /// key hashes to the old key's slot
    /// (see the crate docs on `renew`); a `RENAME` across slots
    /// would fail with `CROSSSLOT`. Elsewhere the new id is any fresh id.
    pub fn renew(&self) {
        let mut state = self.0.borrow_mut();
        if !state.purged {
            state.renew = true;
        }
    }

    /// Leaves the current session alone for the rest of this request, without
    /// deleting it: the next write starts a fresh session with a fresh id.
    /// For data this app cannot use (a counter that is not a number, written
    /// by another app) where deleting it would destroy someone else's data.
    pub fn start_over(&self) {
        let mut state = self.0.borrow_mut();
        if state.purged {
            return; // the purge still deletes the cookie's session
        }
        if let Some(id) = &state.id {
            log::debug!("leaving session {id} alone; the next write starts a fresh one");
        }
        state.id = None;
        state.snapshot = Snapshot::Absent;
        state.observed = false;
        state.issued = false;
        state.stale_cookie = false;
        state.renew = false;
        state.written = false;
        state.cleared = false;
        state.changes.clear();
        state.sign_in = None;
    }

    /// Adds `by` to the integer field `key` (a missing field counts as 0) at
    /// once, atomically in the store, and returns the new value. Concurrent
    /// increments from any number of nodes never lose an update.
    ///
    /// With no live session, a fresh one is created holding `key = by` and
    /// this request's pending changes; its cookie goes out with the
    /// response. One round trip either way (two when the cookie names a
    /// session that has just expired).
    ///
    /// # Errors
    ///
    /// [`SessionError::Purged`] after [`Session::purge`];
    /// [`SessionError::SealedField`] if the store encrypts `key` at rest;
    /// [`SessionError::Store`] with [`StoreError::InvalidData`] if the field
    /// holds something other than an integer (by Redis's rule: no `+1`, no
    /// `01`) or the sum overflows (nothing is written),
    /// [`StoreError::LimitExceeded`] if a new field would break the limits,
    /// or any other store failure.
    pub async fn incr(&self, key: &str, by: i64) -> Result<i64, SessionError> {
        check_key(key)?;
        self.check_not_purged()?;
        self.check_plaintext(key)?;
        if let Some(local) = self.pending_integer(key, by)? {
            return Ok(local);
        }
        let (id, sessions) = self.target();
        if let Some(id) = id {
            let policy = sessions.config().policy;
            let store = sessions.store();
            if let Some(value) = self.within(store.increment(&id, key, by, &policy)).await? {
                self.record_stored(key, value.to_string());
                return Ok(value);
            }
            self.mark_gone();
        }
        self.create_with(key, by.to_string()).await?;
        Ok(by)
    }

    /// Sets `key` to `new` only if it now holds `expected` (`None`: only if
    /// it is absent), at once and atomically in the store. Returns whether
    /// it did. Use it for state machines that concurrent requests must not
    /// both advance (a one-time token, a checkout step).
    ///
    /// Values are compared as stored text: strings as they are, numbers as
    /// decimal text, anything structured as compact JSON.
    ///
    /// # Errors
    ///
    /// As [`Session::incr`], and [`SessionError::Encode`] for values serde
    /// cannot serialize.
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool, SessionError> {
        check_key(key)?;
        self.check_not_purged()?;
        self.check_plaintext(key)?;
        let expected = match expected {
            Some(value) => codec::encode_value(value).map_err(SessionError::Encode)?,
            None => None,
        };
        let Some(new) = codec::encode_value(new).map_err(SessionError::Encode)? else {
            return Err(SessionError::Encode(serde::ser::Error::custom(
                "compare_and_set needs a non-null new value",
            )));
        };
        {
            let mut state = self.0.borrow_mut();
            if let Some(pending) = state.changes.get(key) {
                let swapped = *pending == expected;
                if swapped {
                    state.changes.insert(key.to_owned(), Some(new));
                }
                return Ok(swapped);
            }
        }
        let (id, sessions) = self.target();
        if let Some(id) = id {
            let policy = sessions.config().policy;
            let store = sessions.store();
            let swap = store.compare_and_set(&id, key, expected.as_deref(), Some(&new), &policy);
            match self.within(swap).await? {
                Some(true) => {
                    self.record_stored(key, new);
                    return Ok(true);
                }
                Some(false) => return Ok(false),
                None => self.mark_gone(),
            }
        }
        // No live session: the field is absent.
        if expected.is_some() {
            return Ok(false);
        }
        self.create_with(key, new).await?;
        Ok(true)
    }

    /// True if the request knows of a live session, or has created one.
    fn is_live(&self) -> bool {
        matches!(self.0.borrow().snapshot, Snapshot::Live(_))
    }

    /// `incr` and `compare_and_set` need Redis to see the plain value.
    fn check_plaintext(&self, key: &str) -> Result<(), SessionError> {
        if self.0.borrow().sessions.store().seals_field(key) {
            return Err(SessionError::SealedField(key.to_owned()));
        }
        Ok(())
    }

    fn check_not_purged(&self) -> Result<(), SessionError> {
        if self.0.borrow().purged {
            return Err(SessionError::Purged);
        }
        Ok(())
    }

    /// The id to act on now (none after a `clear` of a session not yet
    /// stored, or with no session) and the service.
    fn target(&self) -> (Option<SessionId>, SessionService) {
        let state = self.0.borrow();
        let id = if matches!(state.snapshot, Snapshot::Absent) || state.purged {
            None
        } else {
            state.id.clone()
        };
        (id, state.sessions.clone())
    }

    /// `incr` on a field this request already set or removed: the request's
    /// own value is the truth, so count on it locally.
    fn pending_integer(&self, key: &str, by: i64) -> Result<Option<i64>, SessionError> {
        let mut state = self.0.borrow_mut();
        // Redis's own rule, as the stores apply it: a request-local count
        // must refuse what HINCRBY would.
        let current = match state.changes.get(key) {
            Some(Some(text)) => parse_redis_integer(text).ok_or_else(|| {
                SessionError::Store(StoreError::InvalidData(
                    "hash value is not an integer".into(),
                ))
            })?,
            Some(None) => 0,
            None if state.cleared => 0,
            None => return Ok(None),
        };
        let value = current.checked_add(by).ok_or_else(|| {
            SessionError::Store(StoreError::InvalidData(
                "increment or decrement would overflow".into(),
            ))
        })?;
        state
            .changes
            .insert(key.to_owned(), Some(value.to_string()));
        Ok(Some(value))
    }

    /// After an immediate write: keep the snapshot in step with the store.
    fn record_stored(&self, key: &str, value: String) {
        let mut state = self.0.borrow_mut();
        state.written = true;
        if let Snapshot::Live(loaded) = &mut state.snapshot {
            loaded.fields.insert(key.to_owned(), value);
        }
    }

    /// The store says the session is gone. Changes made after reading it may
    /// carry its data: they die with it.
    pub(crate) fn mark_gone(&self) {
        let mut state = self.0.borrow_mut();
        log_gone(&state);
        if state.observed {
            state.changes.clear();
            state.cleared = false;
        }
        state.snapshot = Snapshot::Absent;
        state.stale_cookie = !state.issued;
    }

    /// Creates a fresh session holding `key = value` and the pending changes.
    async fn create_with(&self, key: &str, value: String) -> Result<(), SessionError> {
        let (mut changes, sessions) = {
            let state = self.0.borrow();
            (state.pending_changes(), state.sessions.clone())
        };
        changes.upserts.retain(|(field, _)| field != key);
        changes.upserts.push((key.to_owned(), value));
        // With encryption on, the salt is drawn here, so that this
        // request's later writes need not read it back.
        if sessions.config().encryption.is_some() {
            changes.salt = Some(crate::protect::new_salt());
        }
        let policy = sessions.config().policy;
        let id = sessions.create_fresh(&changes, &policy, self).await?;
        let mut state = self.0.borrow_mut();
        let fields: SessionFields = changes.upserts.into_iter().collect();
        let mut created = LoadedSession::from_stored(fields, Some(policy.idle_timeout()));
        created.created = Some(SystemTime::now());
        created.seen = created.created;
        // The salt the create asked for: later writes of this request seal
        // without reading it back.
        created.salt = changes.salt;
        state.snapshot = Snapshot::Live(created);
        state.from_primary = true;
        state.id = Some(id);
        state.issued = true;
        state.stale_cookie = false;
        state.written = true;
        state.renew = false; // a fresh id needs no renewal
        state.changes.clear();
        state.cleared = false;
        Ok(())
    }

    /// Reads the session once, if the request has an id and has not read it.
    pub(crate) async fn ensure_loaded(&self) -> Result<(), SessionError> {
        let (id, sessions) = {
            let state = self.0.borrow();
            match (&state.snapshot, &state.id) {
                (Snapshot::Unknown, Some(id)) => (id.clone(), state.sessions.clone()),
                _ => return Ok(()),
            }
        };
        let loaded = self.within(sessions.store().load(&id)).await?;
        self.record_load(loaded, false);
        Ok(())
    }

    /// As [`Session::ensure_loaded`], for a read whose answer authorises a
    /// write to other keys (who is signed in, before that user's sessions
    /// are listed or revoked): where loads may come from a replica, from
    /// the master, once, even if the request already read a replica's
    /// copy. A replica that has not yet seen a logout must not let the
    /// logged-out cookie revoke the user's other sessions.
    pub(crate) async fn ensure_loaded_from_primary(&self) -> Result<(), SessionError> {
        let stale_possible = self.0.borrow().sessions.store().reads_from_replicas();
        if !stale_possible {
            return self.ensure_loaded().await;
        }
        let (id, sessions) = {
            let state = self.0.borrow();
            match (&state.snapshot, &state.id) {
                (Snapshot::Unknown, Some(id)) => (id.clone(), state.sessions.clone()),
                (Snapshot::Live(_), Some(id)) if !state.from_primary => {
                    (id.clone(), state.sessions.clone())
                }
                _ => return Ok(()),
            }
        };
        let loaded = self.within(sessions.store().load_from_primary(&id)).await?;
        self.record_load(loaded, true);
        Ok(())
    }

    /// Keeps what a load found as the request's snapshot.
    fn record_load(&self, loaded: Option<LoadedSession>, from_primary: bool) {
        metrics::counter!(names::LOADS_TOTAL).increment(1);
        let mut state = self.0.borrow_mut();
        state.from_primary = from_primary;
        match loaded {
            Some(loaded) => {
                state.snapshot = Snapshot::Live(loaded);
                state.observed = true;
            }
            None => {
                state.snapshot = Snapshot::Absent;
                state.stale_cookie = !state.issued;
            }
        }
    }
}

impl State {
    pub(crate) fn pending_changes(&self) -> Changes {
        let mut changes = Changes {
            clear: self.cleared,
            salt: match &self.snapshot {
                Snapshot::Live(loaded) => loaded.salt.clone(),
                _ => None,
            },
            ..Changes::default()
        };
        for (key, change) in &self.changes {
            match change {
                Some(value) => changes.upserts.push((key.clone(), value.clone())),
                None => changes.removals.push(key.clone()),
            }
        }
        changes
    }
}

pub(crate) fn log_gone(state: &State) {
    if let Some(id) = &state.id {
        log::debug!("session {id} is gone (expired, purged or never existed)");
    }
}

fn check_key(key: &str) -> Result<(), SessionError> {
    if !is_user_field(key) {
        return Err(SessionError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

fn limit(limit: crate::store::Limit) -> SessionError {
    SessionError::Store(StoreError::LimitExceeded(limit))
}

fn decode_opt<T: DeserializeOwned>(raw: Option<&str>) -> Result<Option<T>, SessionError> {
    raw.map(codec::decode_value)
        .transpose()
        .map_err(SessionError::Decode)
}
