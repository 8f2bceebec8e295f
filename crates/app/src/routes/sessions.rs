//! "Where you're signed in": `GET /sessions`, `DELETE /sessions/{handle}`,
//! `POST /logout/others`, `POST /logout/everywhere`. Each needs a signed-in
//! session (401 without, and no Redis write); the POST and DELETE pass the
//! Origin check first (`origin.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use session::{Session, SessionHandle, SessionService};

use crate::error::ApiError;

/// One item of the list. Times are Unix seconds.
#[derive(Debug, Serialize)]
struct Item {
    handle: String,
    current: bool,
    created_at: Option<u64>,
    last_seen_at: Option<u64>,
    user_agent: Option<String>,
}

/// The signed-in user and this session's handle, or 401.
async fn signed_in(session: &Session) -> Result<(String, Option<SessionHandle>), ApiError> {
    match session.user().await? {
        Some(user) => Ok((user, session.handle().await?)),
        None => Err(ApiError::NotSignedIn),
    }
}

/// The user's sessions, newest first. Round trips: the session's load, the
/// index, then every listed session at once (one on a single server).
pub(crate) async fn list(
    session: Session,
    sessions: web::Data<SessionService>,
) -> Result<HttpResponse, ApiError> {
    let (user, current) = signed_in(&session).await?;
    let items: Vec<Item> = sessions
        .list_user_sessions(&user)
        .await?
        .into_iter()
        .map(|listed| Item {
            current: current.as_ref() == Some(&listed.handle),
            handle: listed.handle.as_str().to_owned(),
            created_at: listed.created_at.map(unix_secs),
            last_seen_at: listed.last_seen_at.map(unix_secs),
            user_agent: listed.user_agent,
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "sessions": items })))
}

/// Ends one of the caller's sessions: 204, or 404 for a handle that is not
/// theirs (unknown or another user's: the same answer). The current
/// session's own handle ends it and removes the cookie.
pub(crate) async fn revoke_one(
    session: Session,
    sessions: web::Data<SessionService>,
    handle: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (user, current) = signed_in(&session).await?;
    let Some(handle) = SessionHandle::parse(&handle) else {
        return Err(ApiError::NotFound);
    };
    if current.as_ref() == Some(&handle) {
        session.purge(); // the commit deletes it, drops its entry, expires the cookie
        return Ok(HttpResponse::NoContent().finish());
    }
    if sessions.revoke_user_session(&user, &handle).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// Ends every other session of the caller; this one stays.
pub(crate) async fn log_out_others(
    session: Session,
    sessions: web::Data<SessionService>,
) -> Result<HttpResponse, ApiError> {
    let (user, current) = signed_in(&session).await?;
    let revoked = sessions
        .revoke_user_sessions(&user, current.as_ref())
        .await?;
    Ok(revoked_response(revoked))
}

/// Ends every session of the caller, this one too, and removes the cookie.
pub(crate) async fn log_out_everywhere(
    session: Session,
    sessions: web::Data<SessionService>,
) -> Result<HttpResponse, ApiError> {
    let (user, _) = signed_in(&session).await?;
    let revoked = sessions.revoke_user_sessions(&user, None).await?;
    session.purge(); // already ended; this expires the cookie
    Ok(revoked_response(revoked))
}

fn revoked_response(revoked: usize) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "revoked": revoked }))
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
