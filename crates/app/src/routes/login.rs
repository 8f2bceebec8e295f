//! `POST /login {"user": "..."}`: sign in, on a fresh session id.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use session::Session;

use crate::error::ApiError;

/// The session field that holds the signed-in user.
pub(crate) const USER_FIELD: &str = "user";

/// The longest user name we accept, in characters.
const MAX_USER_CHARS: usize = 64;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    user: String,
}

/// Stores the user and renews the session id (fixation defence): whatever
/// id the browser had, planted or seen by someone else, stops working, and
/// the data the session held (the count, say) moves to the new id.
///
/// This demo trusts the name it is given; a real app checks a password or a
/// token here, before touching the session.
///
/// Four Redis round trips with a session, three without: `HGET` of the
/// user's epoch; `HGETALL` + `PTTL` of the session (who was signed in, and
/// since when); `EVALSHA` of `store/lua/renew.lua` (alive check,
/// `RENAME` to a new id in the same cluster slot, `HSET user` and the
/// sign-in metadata, `PEXPIRE`), or `create.lua` without a session; `EVALSHA
/// user_index.lua` (op `join`). On Sentinel and Cluster the two writes are
/// pipelined with `WAIT 1`.
pub(crate) async fn login(
    session: Session,
    body: web::Json<Login>,
) -> Result<HttpResponse, ApiError> {
    let user = body.into_inner().user;
    let user = user.trim();
    if user.is_empty()
        || user.chars().count() > MAX_USER_CHARS
        || user.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "user must be 1 to {MAX_USER_CHARS} characters, without control characters"
        )));
    }
    // The epoch first, before any credential check: a "sign out
    // everywhere" that starts after this makes the sign-in fail.
    let ticket = session.begin_sign_in(user).await?;
    // (A real app checks the password or token here.)
    session.insert(USER_FIELD, user)?;
    session.sign_in(ticket)?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "user": user })))
}
