//! `GET /me`: who is signed in, and the session's times.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::HttpResponse;
use actix_web::http::header::CACHE_CONTROL;
use serde::Serialize;
use session::Session;

use crate::error::ApiError;
use crate::routes::login::USER_FIELD;

/// The JSON body. Times are Unix seconds; `null` when unknown.
#[derive(Debug, Serialize)]
struct MeBody {
    /// The signed-in user, or `null`.
    user: Option<String>,
    /// When the session began (its absolute lifetime counts from here).
    created_at: Option<u64>,
    /// When it was last written or refreshed.
    last_seen_at: Option<u64>,
    /// Seconds before it expires unless used again.
    expires_in_secs: Option<u64>,
}

/// Reads the session: ONE Redis round trip (`HGETALL` + `PTTL`, pipelined),
/// none without a cookie. It writes nothing, unless the TTL has run down past
/// the touch threshold (`session.touch_after_fraction`), when the middleware
/// refreshes it with one more.
pub(crate) async fn me(session: Session) -> Result<HttpResponse, ApiError> {
    let user: Option<String> = session.get(USER_FIELD).await?;
    let times = session.times().await?;
    let body = MeBody {
        user,
        created_at: times.and_then(|t| t.created).map(unix_secs),
        last_seen_at: times.and_then(|t| t.last_seen).map(unix_secs),
        expires_in_secs: times.and_then(|t| t.expires_in).map(|left| left.as_secs()),
    };
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(body))
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}
