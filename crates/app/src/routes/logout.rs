//! `POST /logout`: end the session on the server and in the browser.

use actix_web::HttpResponse;
use actix_web::http::header::CACHE_CONTROL;
use serde_json::json;
use session::Session;

use crate::error::ApiError;

/// Purges the session: reads it (`HGETALL` + `PTTL`, one round trip), then
/// after the handler the middleware deletes it in Redis (`UNLINK`, one
/// round trip; on Sentinel and Cluster pipelined with `WAIT 1` for a
/// replica, and a 503 if none confirms), drops it from its user's index if
/// signed in (`EVALSHA user_index.lua`, one more) and expires the cookie. A request for that
/// session still in flight cannot bring it back: every write checks that the
/// session is alive inside the same Lua script, so it writes nothing.
///
/// Answers `{"ended": true}` if the request named a session, whether or not
/// it was still alive: either way, it is gone now.
///
/// POST, with a `SameSite=Lax` cookie: another site cannot log users out.
pub(crate) async fn logout(session: Session) -> Result<HttpResponse, ApiError> {
    let ended = session.id().is_some();
    // Read first, so that the commit knows the signed-in user and drops
    // this session's entry from their index ("where you're signed in").
    session.user().await?;
    session.purge();
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "ended": ended })))
}
