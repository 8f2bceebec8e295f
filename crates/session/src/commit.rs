//! The commit: what a request's [`Session`] writes after its handler, in
//! one round trip, and what the response does with the cookie.

use std::time::SystemTime;

use crate::log_text::Escaped;
use crate::metric_names as names;
use crate::session::{Snapshot, State};
use crate::sign_in::SignIn;
use crate::store::{Changes, Renewal};
use crate::{Session, SessionError, SessionId, SessionService};

use crate::service::FRESH_ID_ATTEMPTS;

/// What the response must do with the session cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieUpdate {
    /// Leave the browser's cookie alone.
    Keep,
    /// Send a cookie naming this id (new, renewed, or a refreshed `Max-Age`).
    Set(SessionId),
    /// Make the browser forget the cookie.
    Remove,
}

impl Session {
    /// Writes what the request changed: the middleware calls it once, after
    /// the handler. With `failed` (the handler returned an error, or any
    /// 5xx), the recorded changes are dropped, since the handler may have
    /// stopped half-way:
    ///
    /// - a purge still happens: it is a security action;
    /// - immediate operations (`incr`, `compare_and_set`) already happened,
    ///   and stand; if one of them created the session, its cookie is still
    ///   sent, so that the write does not sit in the store with no browser
    ///   able to reach it;
    /// - nothing else is written, renewed or refreshed.
    pub(crate) async fn commit(&self, failed: bool) -> Result<CookieUpdate, SessionError> {
        let (id, sessions, purged) = {
            let state = self.0.borrow();
            (state.id.clone(), state.sessions.clone(), state.purged)
        };
        let store = sessions.store();
        if purged {
            return self.commit_purge(id).await;
        }
        if failed {
            let state = self.0.borrow();
            return Ok(match &state.id {
                Some(id) if state.issued && state.written => CookieUpdate::Set(id.clone()),
                _ => CookieUpdate::Keep,
            });
        }
        let mut sign_in = self.0.borrow_mut().sign_in.take();
        if sign_in.is_some() || self.0.borrow().renew {
            // A sign-in, or a renewal, must know whether the session is
            // signed in (its user, handle and creation time): read it.
            self.ensure_loaded().await?;
        }
        if sign_in.is_none() && self.0.borrow().renew {
            // A plain renewal of a signed-in session moves its index entry
            // as a sign-in does, under the epoch read now, BEFORE the
            // rename: a revocation in between makes it fail, not escape.
            let signed_in = match &self.0.borrow().snapshot {
                Snapshot::Live(loaded) => loaded
                    .user
                    .clone()
                    .map(|user| (user, loaded.handle.is_some())),
                _ => None,
            };
            if let Some((user, has_entry)) = signed_in {
                let ticket = if has_entry {
                    // Its entry moves under the same handle, guarded by the
                    // marks every revocation leaves (`commit_renewal`): no
                    // epoch to read, and none is used.
                    SignIn {
                        user,
                        epoch: 0,
                        read_at: std::time::Instant::now(),
                        renewal: true,
                    }
                } else {
                    // Signed in before the index existed: it joins as a
                    // sign-in does, under the epoch read now.
                    let mut ticket = self.begin_sign_in(&user).await?;
                    ticket.renewal = true;
                    ticket
                };
                sign_in = Some(ticket);
            }
        }
        if let Some(ticket) = sign_in {
            let changes = self.0.borrow().pending_changes();
            let Some(id) = self.commit_sign_in(ticket, changes).await? else {
                return Ok(CookieUpdate::Remove);
            };
            commit_done("renew");
            let mut state = self.0.borrow_mut();
            state.id = Some(id.clone());
            state.issued = true;
            return Ok(CookieUpdate::Set(id));
        }
        let plan = self.0.borrow().plan();
        let policy = sessions.config().policy;
        match plan {
            Plan::Nothing => Ok(CookieUpdate::Keep),
            Plan::ForgetCookie => Ok(CookieUpdate::Remove),
            Plan::RefreshCookie(id) => Ok(self.cookie_for(id)),
            Plan::Create(changes) => {
                let id = sessions.create_fresh(&changes, &policy, self).await?;
                commit_done("create");
                Ok(CookieUpdate::Set(id))
            }
            Plan::Update(id, changes) => {
                let written = self.within(store.update(&id, &changes, &policy)).await?;
                commit_done(if changes.is_empty() {
                    "touch"
                } else {
                    "update"
                });
                if written {
                    return Ok(self.cookie_for(id));
                }
                self.mark_gone();
                self.after_gone(&sessions, changes).await
            }
            Plan::Renew(old, changes) => {
                for _ in 0..FRESH_ID_ATTEMPTS {
                    let new = store.id_for_renewal(&old);
                    let renewal = self
                        .within(store.renew(&old, &new, &changes, &policy))
                        .await?;
                    commit_done("renew");
                    match renewal {
                        Renewal::Renewed => {
                            metrics::counter!(names::RENEWALS_TOTAL).increment(1);
                            log::debug!("renewed session {old} as {new}");
                            return Ok(CookieUpdate::Set(new));
                        }
                        Renewal::Missing => {
                            self.mark_gone();
                            return self.after_gone(&sessions, changes).await;
                        }
                        _ => log::error!("renewed id {new} collided"),
                    }
                }
                Err(SessionError::IdsExhausted)
            }
        }
    }

    /// The commit of a purge: the cookie's session ends, and with it its
    /// user index entry. A signed-in session's entry is marked as being
    /// ended BEFORE the session is deleted, in the step that reads it, so a
    /// renewal of the same session racing this logout (from another tab,
    /// or a thief holding the same cookie) either fails to move the entry
    /// or has moved it, and then its new id is read here and ended too.
    /// So the session is read first unless the handler did: one more round
    /// trip for a logout that never looked at its session.
    async fn commit_purge(&self, id: Option<SessionId>) -> Result<CookieUpdate, SessionError> {
        // After a purge nothing changes `id` any more. It is the cookie's
        // session, or one this request made; the cookie's own id is
        // deleted too if `start_over` had let go of it.
        let cookie_id = self.0.borrow().cookie_id.clone();
        let mut doomed: Vec<SessionId> = id.into_iter().collect();
        if let Some(cookie_id) = cookie_id
            && !doomed.contains(&cookie_id)
        {
            doomed.push(cookie_id);
        }
        if doomed.is_empty() {
            return Ok(CookieUpdate::Keep);
        }
        self.ensure_loaded().await?;
        let sessions = self.0.borrow().sessions.clone();
        let store = sessions.store();
        let signed_in = match &self.0.borrow().snapshot {
            Snapshot::Live(loaded) => loaded.user.clone().zip(loaded.handle.clone()),
            _ => None,
        };
        if let Some((user, handle)) = &signed_in {
            match self.within(store.take_user_entry(user, handle)).await {
                Ok(Some(entry)) if !doomed.contains(&entry.id) => doomed.push(entry.id),
                Ok(_) => {}
                Err(error) => log::warn!(
                    "a logout could not mark its index entry (a renewal racing it may outlive it): {}",
                    Escaped(&error)
                ),
            }
        }
        for id in &doomed {
            let existed = self.within(store.delete(id)).await?;
            commit_done("purge");
            log::debug!("purged session {id} (existed: {existed})");
        }
        metrics::counter!(names::PURGES_TOTAL).increment(1);
        if let Some((user, handle)) = signed_in
            && let Err(error) = self.within(store.drop_user_entries(&user, &[handle])).await
        {
            log::warn!(
                "a logout could not drop its index entry (dropped at the next list): {}",
                Escaped(&error)
            );
        }
        Ok(CookieUpdate::Remove)
    }

    /// The commit found the session gone. A request that read it drops its
    /// changes (they may carry the dead session's data); one that only
    /// wrote blindly starts a fresh session with its own changes.
    async fn after_gone(
        &self,
        sessions: &SessionService,
        changes: Changes,
    ) -> Result<CookieUpdate, SessionError> {
        if self.0.borrow().observed || changes.upserts.is_empty() {
            return Ok(CookieUpdate::Remove);
        }
        let fresh = Changes {
            upserts: changes.upserts,
            ..Changes::default()
        };
        let policy = sessions.config().policy;
        let id = sessions.create_fresh(&fresh, &policy, self).await?;
        Ok(CookieUpdate::Set(id))
    }

    /// The cookie after a successful write to `id`: always for a new id, and
    /// for a persistent cookie whose `Max-Age` should slide with the TTL.
    fn cookie_for(&self, id: SessionId) -> CookieUpdate {
        let state = self.0.borrow();
        if state.issued || state.sessions.config().cookie.max_age_secs.is_some() {
            CookieUpdate::Set(id)
        } else {
            CookieUpdate::Keep
        }
    }
}

/// What the commit will do, decided without awaiting anything.
enum Plan {
    Nothing,
    ForgetCookie,
    /// An immediate write already went out; only the cookie is due.
    RefreshCookie(SessionId),
    Create(Changes),
    Update(SessionId, Changes),
    Renew(SessionId, Changes),
}

impl State {
    fn plan(&self) -> Plan {
        let changes = self.pending_changes();
        let known_absent = matches!(self.snapshot, Snapshot::Absent);
        match &self.id {
            Some(id) if !known_absent => {
                if self.renew {
                    Plan::Renew(id.clone(), changes)
                } else if !changes.is_empty() || self.touch_due() {
                    Plan::Update(id.clone(), changes)
                } else if self.written {
                    Plan::RefreshCookie(id.clone())
                } else {
                    Plan::Nothing
                }
            }
            _ if !changes.upserts.is_empty() => Plan::Create(Changes {
                upserts: changes.upserts,
                ..Changes::default()
            }),
            _ if self.stale_cookie => Plan::ForgetCookie,
            _ => Plan::Nothing,
        }
    }

    /// Whether a session that was only read should have its TTL refreshed:
    /// when the TTL has run down by more than the touch threshold from what
    /// a refresh would set it to (the idle timeout, or less near the
    /// absolute end, where refreshing gains nothing).
    fn touch_due(&self) -> bool {
        if self.written {
            return false;
        }
        let Snapshot::Live(loaded) = &self.snapshot else {
            return false;
        };
        let Some(ttl) = loaded.ttl else {
            return false;
        };
        let config = self.sessions.config();
        let mut refreshed = config.policy.idle_timeout();
        if let (Some(absolute), Some(created)) = (config.policy.absolute_timeout(), loaded.created)
        {
            let age = SystemTime::now()
                .duration_since(created)
                .unwrap_or_default();
            refreshed = refreshed.min(absolute.saturating_sub(age));
        }
        refreshed.saturating_sub(ttl) > config.touch_after
    }
}

/// Counts one write made by the commit.
fn commit_done(op: &'static str) {
    metrics::counter!(names::COMMITS_TOTAL, "op" => op).increment(1);
}
