//! [`SessionError`]: what the session layer reports to the app.

use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};

use crate::StoreError;
use crate::codec::CodecError;

/// Why a session operation failed.
///
/// It is an actix [`ResponseError`], so a handler may return it with `?`:
/// 503 with `Retry-After: 1` when the store is unavailable, 413 when the
/// session would grow past its limits, 500 otherwise; each with a JSON body
/// `{"error": "...", "message": "..."}`. Apps that want other answers match
/// on the variants instead.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed; see [`StoreError`]. Unavailability passes by itself.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The value cannot be stored: for [`crate::SessionService::set_session`],
    /// not a struct or map, or with no fields at all; for
    /// [`crate::Session::insert`], a value serde cannot serialize.
    #[error("the value cannot be stored in a session")]
    Encode(#[source] CodecError),

    /// The stored session does not have the shape asked for: a missing field,
    /// or a field that does not parse as its type.
    #[error("the stored session does not match the requested type")]
    Decode(#[source] CodecError),

    /// A field name that is empty or starts with `__`, which is reserved for
    /// the session's own metadata.
    #[error("{0:?} cannot name a session field: names are non-empty and do not start with \"__\"")]
    InvalidKey(String),

    /// Fresh ids kept colliding with existing sessions. With 122 random bits
    /// this means the random source is broken; it is never a normal outcome.
    #[error("could not find an unused session id")]
    IdsExhausted,

    /// A [`crate::Session`] was asked for on a route without
    /// [`crate::SessionMiddleware`].
    #[error("the Session extractor needs SessionMiddleware on this route")]
    MiddlewareMissing,
}

impl SessionError {
    /// True when the store could not be reached: answer 503 and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(error) if error.is_unavailable())
    }

    /// True when the stored data cannot serve the operation (a field that is
    /// not an integer, say): retrying will not help.
    pub fn is_invalid_data(&self) -> bool {
        matches!(self, Self::Store(StoreError::InvalidData(_)))
    }

    /// True when a write would have taken the session past its limits.
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(self, Self::Store(StoreError::LimitExceeded(_)))
    }

    /// A short, stable code for the JSON body and for logs.
    pub fn code(&self) -> &'static str {
        match self {
            _ if self.is_unavailable() => "session_store_unavailable",
            _ if self.is_limit_exceeded() => "session_too_large",
            Self::Store(_) | Self::Decode(_) => "session_data_invalid",
            Self::Encode(_) | Self::InvalidKey(_) => "session_value_invalid",
            Self::IdsExhausted | Self::MiddlewareMissing => "session_internal_error",
        }
    }
}

/// `error: cause: cause`, for one log line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        if self.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else if self.is_limit_exceeded() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        // Store errors carry their cause in the source chain; the message
        // here is the top line only, which never holds ids or passwords.
        let message = match self {
            Self::Store(StoreError::LimitExceeded(limit)) => limit.to_string(),
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        let mut response = HttpResponse::build(status);
        response.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((RETRY_AFTER, HeaderValue::from_static("1")));
        }
        response.body(body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;
    use crate::store::Limit;

    fn body_of(error: &SessionError) -> serde_json::Value {
        let bytes = error
            .error_response()
            .into_body()
            .try_into_bytes()
            .expect("a full body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn an_unavailable_store_is_503_with_retry_after() {
        let error = SessionError::Store(StoreError::Unavailable("down".into()));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        assert_eq!(body_of(&error)["error"], "session_store_unavailable");
    }

    #[test]
    fn a_session_over_its_limits_is_413_naming_the_limit() {
        let error = SessionError::Store(StoreError::LimitExceeded(Limit::Fields(64)));
        assert_eq!(error.status_code(), StatusCode::PAYLOAD_TOO_LARGE);
        let body = body_of(&error);
        assert_eq!(body["error"], "session_too_large");
        assert_eq!(body["message"], "a session holds at most 64 fields");
    }

    #[test]
    fn other_failures_are_500_with_a_json_body() {
        let error = SessionError::InvalidKey("__created".into());
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body_of(&error)["error"], "session_value_invalid");
    }
}
