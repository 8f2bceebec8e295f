//! `GET /count`: the NestJS AppController's counter, without its races.

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use session::SessionService;
use session::cookie::{session_cookie, session_id_from_headers};

use crate::error::ApiError;

/// The field `/count` increments, as in the Nest design.
const COUNT_FIELD: &str = "count";

/// The JSON body: `{"count": n}`.
#[derive(Serialize)]
struct CountBody {
    count: i64,
}

/// Reads the `sid` cookie, increments the session's `count` (1 for a new
/// session) and answers `{"count": n}` with the cookie set again, so its
/// `Max-Age` slides with the session's TTL.
///
/// An existing session costs ONE Redis round trip (`EVALSHA
/// hash_incr_if_exists`: `EXISTS` + `HINCRBY` + `EXPIRE`, atomic). A request
/// with no cookie costs one (`EVALSHA hash_write`, create). A cookie naming
/// an unknown or expired session costs two and is never adopted: the client
/// gets a fresh id.
pub(crate) async fn count(
    request: HttpRequest,
    sessions: web::Data<SessionService>,
) -> Result<HttpResponse, ApiError> {
    let settings = sessions.settings();
    let sid = session_id_from_headers(request.headers(), &settings.cookie_name);
    let counted = sessions.increment(sid.as_ref(), COUNT_FIELD, 1).await?;
    Ok(HttpResponse::Ok()
        // The response carries a session cookie: no shared cache may keep it.
        .insert_header((CACHE_CONTROL, "no-store"))
        .cookie(session_cookie(&counted.id, settings))
        .json(CountBody {
            count: counted.value,
        }))
}
