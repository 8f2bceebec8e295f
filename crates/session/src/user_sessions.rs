//! "Where you're signed in": a user's sessions, listed and revoked, for an
//! account page, an admin, or a password change. The index and its race
//! argument are in `store/users.rs`.

use std::time::SystemTime;

use crate::service::Budget;
use crate::sign_in::end_entries;
use crate::store::{SessionHandle, is_valid_user_id};
use crate::{SessionError, SessionService};

/// One of a user's sessions, as a list shows it: never its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// Opaque: name it to [`SessionService::revoke_user_session`].
    pub handle: SessionHandle,
    /// When the session began (`None` for one a Nest node wrote).
    pub created_at: Option<SystemTime>,
    /// The last write or TTL refresh (precise to the touch interval).
    pub last_seen_at: Option<SystemTime>,
    /// As it signed in, at most 256 bytes.
    pub user_agent: Option<String>,
}

/// The whole budget of one call outside a request, shared by its steps: a
/// deadline, so that the calls' futures are `Send` (a password-change
/// handler may `tokio::spawn` them).
struct CallBudget {
    deadline: tokio::time::Instant,
}

impl Budget for CallBudget {
    fn remaining(&self) -> std::time::Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }
    fn spend(&self, _took: std::time::Duration) {}
}

impl SessionService {
    fn call_budget(&self) -> CallBudget {
        CallBudget {
            deadline: tokio::time::Instant::now() + self.budget(),
        }
    }

    /// `user`'s live sessions, newest first. Entries whose session expired,
    /// was logged out, or now belongs to someone else are not listed (they
    /// are pruned by their deadline, or ended by the cap). Round trips: the
    /// index, then every session at once (one on a single server).
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidUser`], or a store failure.
    pub async fn list_user_sessions(&self, user: &str) -> Result<Vec<UserSession>, SessionError> {
        if !is_valid_user_id(user) {
            return Err(SessionError::InvalidUser);
        }
        let budget = self.call_budget();
        let store = self.store();
        let policy = self.config().policy;
        let entries = spend(&budget, store.user_entries(user, &policy)).await?;
        let ids: Vec<_> = entries.iter().map(|entry| entry.id.clone()).collect();
        let loaded = spend(&budget, store.load_many(&ids)).await?;
        let mut listed = Vec::new();
        let mut stale = Vec::new();
        for (entry, session) in entries.into_iter().zip(loaded) {
            match session {
                // The handle is drawn afresh at each sign-in, so it alone
                // proves the session is still this entry's; the user is
                // checked too wherever it can be read (a session sealed
                // under a key this node lacks is listed, not dropped).
                Some(session)
                    if session.handle.as_ref() == Some(&entry.handle)
                        && (session.user.as_deref() == Some(user)
                            || session.sealed_unreadable
                            // A node without keys meets a sealed user.
                            || session.user.as_deref().is_some_and(crate::protect::is_sealed)) =>
                {
                    listed.push(UserSession {
                        handle: entry.handle,
                        created_at: session.created,
                        last_seen_at: session.seen,
                        user_agent: session.user_agent,
                    });
                }
                _ => stale.push(entry.handle),
            }
        }
        // Entries whose session is gone are left for the cap and their
        // deadline to prune: a list may read an entry just before a
        // renewal moves it to a new id, and dropping it then would leave
        // that live session out of the index.
        if !stale.is_empty() {
            log::debug!("{} stale index entries not listed", stale.len());
        }
        Ok(listed)
    }

    /// Ends `user`'s session named by `handle`. Returns false, ending
    /// nothing, for a handle that is not one of `user`'s: the same answer
    /// for an unknown handle and for another user's.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidUser`], or a store failure.
    pub async fn revoke_user_session(
        &self,
        user: &str,
        handle: &SessionHandle,
    ) -> Result<bool, SessionError> {
        if !is_valid_user_id(user) {
            return Err(SessionError::InvalidUser);
        }
        let budget = self.call_budget();
        // Marked as being ended first, in the same step that reads it: a
        // renewal of that session racing this call can no longer move the
        // entry, and one that already did left its new id here.
        let Some(entry) = spend(&budget, self.store().take_user_entry(user, handle)).await? else {
            return Ok(false);
        };
        end_entries(self, &budget, user, std::slice::from_ref(&entry)).await?;
        Ok(true)
    }

    /// Ends every session of `user` but `except`'s (`None`: all of them):
    /// "sign out my other devices", "sign out everywhere", or what a
    /// password change calls. A sign-in that began before this call and
    /// had not joined the index fails (see [`crate::Session::sign_in`]).
    /// Returns how many live sessions it ended.
    ///
    /// # Errors
    ///
    /// [`SessionError::InvalidUser`], or a store failure.
    pub async fn revoke_user_sessions(
        &self,
        user: &str,
        except: Option<&SessionHandle>,
    ) -> Result<usize, SessionError> {
        if !is_valid_user_id(user) {
            return Err(SessionError::InvalidUser);
        }
        let budget = self.call_budget();
        let policy = self.config().policy;
        let doomed = spend(&budget, self.store().revoke_user(user, except, &policy)).await?;
        end_entries(self, &budget, user, &doomed).await
    }
}

async fn spend<T>(
    budget: &CallBudget,
    call: impl Future<Output = Result<T, crate::StoreError>>,
) -> Result<T, SessionError> {
    let (result, took) = SessionService::within(budget.remaining(), call).await;
    budget.spend(took);
    Ok(result?)
}
