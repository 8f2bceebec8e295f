//! Signing in: a session joins its user's index (see `store/users.rs` for
//! the layout and the race argument), and what a signed-in session knows
//! of itself.

use std::time::SystemTime;

use crate::log_text::Escaped;
use crate::session::Snapshot;
use crate::store::{
    AGENT_FIELD, CREATED_FIELD, Changes, HANDLE_FIELD, Renewal, SIGN_IN_TICKET_LIFETIME,
    SessionHandle, USER_FIELD, UserEntry, is_valid_user_id,
};
use crate::{Session, SessionError, SessionId, SessionService};

/// The most bytes of a `User-Agent` kept with a signed-in session.
pub const MAX_USER_AGENT_BYTES: usize = 256;

/// A sign-in begun by [`Session::begin_sign_in`]: the user, and the epoch
/// of their index read BEFORE the credentials were checked. Hand it to
/// [`Session::sign_in`] once they are.
#[derive(Debug, Clone)]
pub struct SignIn {
    pub(crate) user: String,
    pub(crate) epoch: u64,
    /// When the epoch was read: a ticket older than a minute is refused,
    /// which bounds how long the epoch must outlive a revocation.
    pub(crate) read_at: std::time::Instant,
    /// Made by the commit for a [`Session::renew`] of a session already
    /// signed in, not by [`Session::begin_sign_in`]: no credentials were
    /// checked, so it may only carry on the session this request read, and
    /// keeps its age (a sign-in proper starts the absolute lifetime anew).
    pub(crate) renewal: bool,
}

impl SignIn {
    /// The user signing in.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl Session {
    /// Begins signing `user` in: reads the user's sign-in epoch (one round
    /// trip). Call it BEFORE checking the credentials, then
    /// [`Session::sign_in`] with the ticket once they are good. A
    /// [`SessionService::revoke_user_sessions`] that starts in between (a
    /// password change, say) makes this sign-in fail instead of outliving it.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidUser`] for a user id that is empty, longer
    /// than 256 bytes or holds control characters;
    /// [`SessionError::Config`] when sessions have no absolute lifetime
    /// (`session.absolute_timeout_secs = 0`: the index bounds its entries by
    /// it); or a store failure.
    pub async fn begin_sign_in(&self, user: &str) -> Result<SignIn, SessionError> {
        if !is_valid_user_id(user) {
            return Err(SessionError::InvalidUser);
        }
        let sessions = self.0.borrow().sessions.clone();
        if sessions.config().policy.absolute_timeout().is_none() {
            return Err(SessionError::Config(crate::ConfigError::new(
                "session.absolute_timeout_secs",
                "must be above 0 to sign users in: their index of sessions is bounded by it",
            )));
        }
        let epoch = self.within(sessions.store().user_epoch(user)).await?;
        Ok(SignIn {
            user: user.to_owned(),
            epoch,
            read_at: std::time::Instant::now(),
            renewal: false,
        })
    }

    /// Signs the ticket's user in when the request commits: the session
    /// moves to a fresh id (as [`Session::renew`]), records the user, a
    /// fresh [`SessionHandle`], the `User-Agent` (at most 256 bytes) and
    /// its times, and joins the user's index. Signed in as someone else
    /// before, it leaves that user's index. At
    /// `session.max_sessions_per_user`, the user's oldest session ends.
    ///
    /// If "revoke all" raised the user's epoch since
    /// [`Session::begin_sign_in`], the commit deletes the new session and
    /// the response is [`SessionError::SignInRevoked`] (401): the user is
    /// not signed in. So is a ticket older than a minute.
    ///
    /// # Errors
    ///
    /// [`SessionError::Purged`] after [`Session::purge`].
    pub fn sign_in(&self, ticket: SignIn) -> Result<(), SessionError> {
        let mut state = self.0.borrow_mut();
        if state.purged {
            return Err(SessionError::Purged);
        }
        state.sign_in = Some(ticket);
        state.renew = true;
        Ok(())
    }

    /// The signed-in user, if any: loads the session on first use. Its
    /// answer authorises acting for that user, so with
    /// `redis.read_from_replicas` it reads from the master (once per
    /// request), never from a replica that may not have seen a logout.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn user(&self) -> Result<Option<String>, SessionError> {
        self.ensure_loaded_from_primary().await?;
        let state = self.0.borrow();
        Ok(match &state.snapshot {
            Snapshot::Live(loaded) if !state.purged => loaded.user.clone(),
            _ => None,
        })
    }

    /// This session's handle in its user's index, if signed in; read as
    /// [`Session::user`] is.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub async fn handle(&self) -> Result<Option<SessionHandle>, SessionError> {
        self.ensure_loaded_from_primary().await?;
        let state = self.0.borrow();
        Ok(match &state.snapshot {
            Snapshot::Live(loaded) if !state.purged && loaded.user.is_some() => {
                loaded.handle.clone()
            }
            _ => None,
        })
    }

    /// The commit of a sign-in: write the session under a fresh id with its
    /// metadata, join the index, end what the cap pushes out, leave a
    /// previous user's index. Returns the new id, for the cookie; `None`
    /// for the renewal of a signed-in session that has ended meanwhile
    /// (revoked, logged out or past its deadline): nothing was written, and
    /// nothing may be, since no credentials vouch for a new session.
    pub(crate) async fn commit_sign_in(
        &self,
        ticket: SignIn,
        mut changes: Changes,
    ) -> Result<Option<SessionId>, SessionError> {
        if ticket.read_at.elapsed() > SIGN_IN_TICKET_LIFETIME {
            log::info!("a sign-in ticket older than a minute was refused");
            return Err(SessionError::SignInRevoked);
        }
        let (sessions, old_id, previous, known_created, agent) = {
            let state = self.0.borrow();
            let live = match &state.snapshot {
                Snapshot::Live(loaded) => Some(loaded),
                _ => None,
            };
            let known_absent = matches!(state.snapshot, Snapshot::Absent);
            (
                state.sessions.clone(),
                state.id.clone().filter(|_| !known_absent),
                live.and_then(|l| l.user.clone().zip(l.handle.clone())),
                live.and_then(|l| l.created),
                state.user_agent.as_ref().map(trimmed_agent),
            )
        };
        let store = sessions.store();
        let policy = sessions.config().policy;
        if ticket.renewal
            && let (Some(old), Some((user, handle))) = (&old_id, &previous)
            && *user == ticket.user
        {
            return self
                .commit_renewal(&sessions, &ticket, old, handle, changes)
                .await;
        }
        let handle = SessionHandle::generate();
        changes
            .upserts
            .push((USER_FIELD.to_owned(), ticket.user.clone()));
        changes
            .upserts
            .push((HANDLE_FIELD.to_owned(), handle.as_str().to_owned()));
        if let Some(agent) = agent {
            changes.upserts.push((AGENT_FIELD.to_owned(), agent));
        } else {
            changes.removals.push(AGENT_FIELD.to_owned());
        }
        // A sign-in proper starts the absolute lifetime anew (OWASP: it
        // counts from authentication), so that an anonymous session's age,
        // or one an attacker planted, does not cut the signed-in life
        // short. A renewal keeps the session's deadline.
        let signed_in_at = SystemTime::now();
        if !ticket.renewal {
            changes
                .upserts
                .push((CREATED_FIELD.to_owned(), unix_millis(signed_in_at)));
        }
        // The session under a fresh id: renewed, or created if there is none.
        let mut written = None;
        if let Some(old) = &old_id {
            let new = store.id_for_renewal(old);
            match self
                .within(store.renew(old, &new, &changes, &policy))
                .await?
            {
                Renewal::Renewed => written = Some(new),
                // The session ended while the request ran: a renewal must
                // not bring it back as a fresh one (that would outlive
                // "sign out everywhere", a revocation or a logout).
                Renewal::Missing if ticket.renewal => {
                    self.mark_gone();
                    return Ok(None);
                }
                Renewal::Missing => {}
                Renewal::Taken => return Err(SessionError::IdsExhausted),
            }
        } else if ticket.renewal {
            self.mark_gone();
            return Ok(None);
        }
        let (id, created) = match written {
            // A sign-in counts from now. A renewal keeps the creation time,
            // if this request read it; else now, which is later than the
            // truth: an entry pruned a little late, never early.
            Some(id) if !ticket.renewal => (id, signed_in_at),
            Some(id) => (id, known_created.unwrap_or(signed_in_at)),
            None => {
                let fresh = Changes {
                    upserts: changes.upserts,
                    ..Changes::default()
                };
                (
                    sessions.create_fresh(&fresh, &policy, self).await?,
                    signed_in_at,
                )
            }
        };
        let entry = UserEntry {
            handle,
            id: id.clone(),
            created,
        };
        if let Some((user, old_handle)) = previous {
            // Before the join, so that the cap does not count it. Its id no
            // longer exists (renamed), and the new one was sent to nobody:
            // dropping first leaves nothing revocable out. Best effort: a
            // stale entry is also dropped when the list is read.
            let dropped = async {
                // Marked first: drop removes only entries being ended.
                store.take_user_entry(&user, &old_handle).await?;
                store.drop_user_entries(&user, &[old_handle]).await
            };
            if let Err(error) = self.within(dropped).await {
                log::warn!(
                    "could not drop a previous sign-in's index entry: {}",
                    Escaped(&error)
                );
            }
        }
        let cap = sessions.config().max_sessions_per_user;
        if ticket.read_at.elapsed() > SIGN_IN_TICKET_LIFETIME {
            // Checked again just before the join: the epoch must outlive
            // every ticket that can still join (see USER_INDEX_KEEP).
            self.within(store.delete(&id)).await?;
            return Err(SessionError::SignInRevoked);
        }
        let joined = self
            .within(store.join_user(&ticket.user, ticket.epoch, &entry, &policy, cap))
            .await;
        let over = match joined {
            Ok(Some(over)) => over,
            Ok(None) => {
                // "Revoke all" ran since the ticket: this sign-in must not
                // stand. Its session's id was never sent to anyone.
                self.within(store.delete(&id)).await?;
                log::info!("a sign-in raced a revocation of all the user's sessions, and lost");
                return Err(SessionError::SignInRevoked);
            }
            Err(error) => {
                // Not in the index, so not revocable: it must not stand.
                let _ = self.within(store.delete(&id)).await;
                return Err(error.into());
            }
        };
        // Best effort: the sign-in stands either way, and entries past the
        // cap are named again at the next join.
        if let Err(error) = end_entries(&sessions, self, &ticket.user, &over).await {
            log::warn!(
                "could not end the sessions past the per-user cap: {}",
                Escaped(&error)
            );
        }
        metrics::counter!(crate::metric_names::RENEWALS_TOTAL).increment(1);
        Ok(Some(id))
    }
}

impl Session {
    /// The commit of a [`Session::renew`] of a signed-in session that has
    /// its index entry: the session moves to a fresh id, and its entry,
    /// under the same handle, to that id. The move of the entry is atomic
    /// and guarded: by the epoch read before the rename (a "sign out
    /// everywhere" since fails it), and by the entry still naming the old
    /// id and not being ended (a revocation by handle, or a logout that
    /// read the session, marks it first, so it fails too). A failed move
    /// deletes the new session: the renewal does not stand, whatever
    /// moment the revocation hit. A revocation that marked the entry after
    /// the move reads the new id, and ends that.
    async fn commit_renewal(
        &self,
        sessions: &SessionService,
        ticket: &SignIn,
        old: &SessionId,
        handle: &SessionHandle,
        changes: Changes,
    ) -> Result<Option<SessionId>, SessionError> {
        let store = sessions.store();
        let policy = sessions.config().policy;
        let new = store.id_for_renewal(old);
        match self
            .within(store.renew(old, &new, &changes, &policy))
            .await?
        {
            Renewal::Renewed => {}
            Renewal::Missing => {
                self.mark_gone();
                return Ok(None);
            }
            Renewal::Taken => return Err(SessionError::IdsExhausted),
        }
        let moved = self
            .within(store.rejoin_user(&ticket.user, handle, old, &new))
            .await;
        match moved {
            Ok(true) => {
                metrics::counter!(crate::metric_names::RENEWALS_TOTAL).increment(1);
                Ok(Some(new))
            }
            Ok(false) => {
                // Ended while the renewal ran: its new id was sent to
                // nobody, and must not outlive the revocation.
                self.within(store.delete(&new)).await?;
                log::info!("a renewal raced the end of its session, and lost");
                self.mark_gone();
                Ok(None)
            }
            Err(error) => {
                // Not reachable by the index under the new id: it must not
                // stand. The old id is gone (renamed): the user signs in
                // again.
                let _ = self.within(store.delete(&new)).await;
                Err(error.into())
            }
        }
    }
}

/// Ends the sessions of `entries` (durably, all at once), then drops the
/// entries: in that order, so that a crash in between leaves them
/// revocable.
pub(crate) async fn end_entries<B: crate::service::Budget + ?Sized>(
    sessions: &SessionService,
    budget: &B,
    user: &str,
    entries: &[UserEntry],
) -> Result<usize, SessionError> {
    let store = sessions.store();
    // All at once: on one server they pipeline (one round trip).
    let deletes = async {
        let results =
            futures_util::future::join_all(entries.iter().map(|entry| store.delete(&entry.id)))
                .await;
        results.into_iter().try_fold(0_usize, |ended, existed| {
            existed.map(|existed| ended + usize::from(existed))
        })
    };
    let (ended, took) = SessionService::within(budget.remaining(), deletes).await;
    budget.spend(took);
    let ended = ended?;
    if !entries.is_empty() {
        let handles: Vec<SessionHandle> = entries.iter().map(|e| e.handle.clone()).collect();
        let (dropped, took) =
            SessionService::within(budget.remaining(), store.drop_user_entries(user, &handles))
                .await;
        budget.spend(took);
        dropped?;
    }
    Ok(ended)
}

/// `at` as `__created` holds it: milliseconds since the Unix epoch.
fn unix_millis(at: SystemTime) -> String {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
        .to_string()
}

/// At most [`MAX_USER_AGENT_BYTES`] of the header, cut at a character
/// boundary, and only if it is text.
fn trimmed_agent(value: &actix_web::http::header::HeaderValue) -> String {
    let text = String::from_utf8_lossy(value.as_bytes());
    let mut end = text.len().min(MAX_USER_AGENT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].chars().filter(|c| !c.is_control()).collect()
}
