//! The one place where errors become HTTP responses.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use session::SessionError;
use session::log_text::Escaped;

/// What a handler can fail with.
///
/// Every error body has one shape, `{"error": "<code>", "message":
/// "<sentence>"}`, whether a handler failed or the session commit after it
/// did (`startup.rs` hands [`session_failure_response`] to the middleware).
/// Session failures keep the session library's codes
/// ([`SessionError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: 400, with the reason.
    #[error("{0}")]
    BadRequest(String),
    /// A session operation failed: the status and code its class gives
    /// (503 + `Retry-After` when the store is unavailable, 429 +
    /// `Retry-After` past the new-session limit, 413 past the session's
    /// limits, 500 for a fault of the store or of the deployment).
    #[error("{}", describe(.0))]
    Session(#[source] SessionError),
    /// The route needs a signed-in session: 401.
    #[error("sign in first")]
    NotSignedIn,
    /// No such thing for this user (or another user's: the same answer): 404.
    #[error("not found")]
    NotFound,
    /// A state-changing request from a page of another origin: 403.
    #[error("cross-site request refused: the Origin is neither this site nor an allowed origin")]
    CrossSite,
}

/// The sentence for a session failure: what the client may be told.
fn describe(error: &SessionError) -> &'static str {
    match error.code() {
        "session_store_unavailable" => "the session store is unavailable",
        "session_too_large" => "the session is too large",
        "session_data_invalid" => "the session's data is invalid",
        "sign_in_revoked" => "the user's sessions were revoked while signing in; sign in again",
        "too_many_new_sessions" => "too many new sessions from this client; retry later",
        _ => "internal error",
    }
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        Self::Session(error)
    }
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Session(error) => error.code(),
            Self::NotSignedIn => "not_signed_in",
            Self::NotFound => "not_found",
            Self::CrossSite => "cross_site_request",
        }
    }
}

/// The response for a session failure that the middleware has already
/// logged: what a failed commit answers.
pub fn session_failure_response(error: &SessionError) -> HttpResponse {
    respond(
        error.status_code(),
        error.code(),
        describe(error),
        error.retry_after_header(),
    )
}

/// The one shape of every error body; `Retry-After` when the client may
/// try again later (a 503, a 429).
fn respond(
    status: StatusCode,
    code: &str,
    message: &str,
    retry_after: Option<HeaderValue>,
) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response.insert_header((CACHE_CONTROL, "no-store"));
    if let Some(retry_after) = retry_after {
        response.insert_header((RETRY_AFTER, retry_after));
    }
    response.json(serde_json::json!({ "error": code, "message": message }))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Session(error) => error.status_code(),
            Self::NotSignedIn => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::CrossSite => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The log gets the whole cause chain, once; the client a short
        // sentence. The chain may quote the client (serde names the field a
        // body got wrong), so it is escaped: one line, whatever was sent.
        let chain = Escaped(cause_chain(self));
        match self {
            Self::BadRequest(_) | Self::NotSignedIn | Self::NotFound | Self::CrossSite => {
                log::info!("{chain}");
            }
            Self::Session(error)
                if error.is_limit_exceeded()
                    || matches!(error, SessionError::TooManyNewSessions { .. }) =>
            {
                log::info!("{chain}");
            }
            Self::Session(error) if error.is_unavailable() || error.is_invalid_data() => {
                log::warn!("{chain} ({})", self.code());
            }
            Self::Session(_) => log::error!("{chain} ({})", self.code()),
        }
        let retry_after = match self {
            Self::Session(error) => error.retry_after_header(),
            _ => None,
        };
        respond(
            self.status_code(),
            self.code(),
            &self.to_string(),
            retry_after,
        )
    }
}

/// `error: cause: cause ...`. Session ids never appear in our errors'
/// texts (they print as 8-character prefixes), nor passwords. A cause may
/// quote the client: log it through [`Escaped`].
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line
}
