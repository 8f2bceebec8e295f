//! The one place where errors become HTTP responses.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use session::SessionError;

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: &str = "1";

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: 400, with the reason.
    #[error("{0}")]
    BadRequest(String),
    /// The session store could not be reached in time: 503 + `Retry-After`.
    #[error("the session store is unavailable")]
    StoreUnavailable(#[source] SessionError),
    /// The request would take the session past its limits: 413.
    #[error("the session is too large: {0}")]
    SessionTooLarge(#[source] SessionError),
    /// Anything else: 500, with nothing internal in the body.
    #[error("internal error")]
    Internal(#[source] SessionError),
}

impl From<SessionError> for ApiError {
    fn from(error: SessionError) -> Self {
        if error.is_unavailable() {
            Self::StoreUnavailable(error)
        } else if error.is_limit_exceeded() {
            Self::SessionTooLarge(error)
        } else {
            Self::Internal(error)
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::SessionTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        // The log gets the whole cause chain; the client a short sentence.
        match self {
            Self::BadRequest(_) | Self::SessionTooLarge(_) => {
                log::info!("{}", cause_chain(self));
            }
            Self::StoreUnavailable(_) => log::warn!("{}", cause_chain(self)),
            Self::Internal(_) => log::error!("{}", cause_chain(self)),
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((CACHE_CONTROL, "no-store"));
        if matches!(self, Self::StoreUnavailable(_)) {
            response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
        }
        response.json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// `error: cause: cause ...`, one line. Session ids never appear in our
/// errors' texts (they print as 8-character prefixes), nor passwords.
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line
}
