//! `POST /logout`: end the session on the server and in the browser.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use session::SessionService;
use session::cookie::{removal_cookie, session_id_from_headers};

use crate::error::ApiError;

/// Deletes the session in Redis (`UNLINK`, one round trip) and expires the
/// cookie. A request for that session still in flight cannot bring it back:
/// every write checks that the session exists in the same Lua script, so it
/// finds nothing and starts a fresh session instead.
///
/// POST, with a `SameSite=Lax` cookie: another site cannot log users out.
pub(crate) async fn logout(
    request: HttpRequest,
    sessions: web::Data<SessionService>,
) -> Result<HttpResponse, ApiError> {
    let settings = sessions.settings();
    let ended = match session_id_from_headers(request.headers(), &settings.cookie_name) {
        Some(id) => sessions.end_session(id.as_str()).await?,
        None => false,
    };
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .cookie(removal_cookie(settings))
        .json(json!({ "ended": ended })))
}
