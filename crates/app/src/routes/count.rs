//! `GET /count`: the NestJS AppController's counter, without its races.

use actix_web::HttpResponse;
use actix_web::http::header::CACHE_CONTROL;
use serde::Serialize;
use session::Session;
use session::log_text::Escaped;

use crate::error::ApiError;

/// The field `/count` increments, as in the Nest design.
pub(crate) const COUNT_FIELD: &str = "count";

/// The JSON body: `{"count": n}`.
#[derive(Serialize)]
struct CountBody {
    count: i64,
}

/// Increments the session's `count` (1 for a new session) and answers
/// `{"count": n}`; the middleware sends the cookie, with a `Max-Age` of the
/// idle timeout (it may outlive the session's TTL by up to the touch
/// threshold, when the increment did not slide it: Redis decides).
///
/// [`Session::incr`] is one `EVALSHA` of `crates/session/src/store/lua/incr.lua`
/// (alive check, `HINCRBY`, and once the TTL is due `HSET __seen` and
/// `PEXPIRE`, atomic), and since it already handled the TTL the middleware
/// has nothing left to write: ONE Redis round trip for an existing session,
/// one for a request without a cookie (`create.lua`), two for a cookie
/// naming a session that is gone, which is never adopted: the client gets a
/// fresh id.
///
/// A `count` that is not an integer (written by another app) is not ours to
/// destroy: that session is left alone and the client gets a fresh one.
pub(crate) async fn count(session: Session) -> Result<HttpResponse, ApiError> {
    let count = match session.incr(COUNT_FIELD, 1).await {
        Err(error) if error.is_invalid_data() => {
            if let Some(id) = session.id() {
                // The error may quote what another writer stored: escaped.
                log::warn!(
                    "session {id} cannot count {COUNT_FIELD:?} ({}): starting a fresh one",
                    Escaped(&error)
                );
            }
            session.start_over();
            session.incr(COUNT_FIELD, 1).await?
        }
        counted => counted?,
    };
    Ok(HttpResponse::Ok()
        // The response carries a session cookie: no shared cache may keep it.
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(CountBody { count }))
}
