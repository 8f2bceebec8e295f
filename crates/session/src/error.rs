//! [`SessionError`]: what the session layer reports to the app.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};

use crate::codec::CodecError;
use crate::log_text::Escaped;
use crate::{ConfigError, StoreError};

/// Why a session operation failed.
///
/// It is an actix [`ResponseError`], so a handler may return it with `?`,
/// and the middleware answers with the same shape when the commit after a
/// handler fails: a JSON body `{"error": "<code>", "message": "<sentence>"}`
/// ([`SessionError::code`]; the sentence never holds an id, a key or a
/// password) and a status by class:
///
/// | class | status | log |
/// |---|---|---|
/// | the store is unavailable (it passes) | 503 + `Retry-After: 1` | warn |
/// | the client is past its new-session limit ([`NewSessionGate`](crate::NewSessionGate)) | 429 + `Retry-After` | info |
/// | the session would grow past its limits | 413 | info |
/// | bad data in this one session | 500 | warn |
/// | a fault of the store (`WRONGTYPE`, a script error, `CROSSSLOT`) | 500 | error |
/// | the store refuses this client (credentials, ACL) | 500 | error |
/// | a handler bug (a reserved name, a value serde refuses, a use after `purge`) | 500 | error |
///
/// Each failure is logged once, with its whole cause chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The store failed; see [`StoreError`] for the classes.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// A value given at run time that settings would refuse: a
    /// [`SessionService::set_session`](crate::SessionService::set_session)
    /// TTL out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The value cannot be stored: for
    /// [`SessionService::set_session`](crate::SessionService::set_session),
    /// not a struct or map, or with no fields at all; for
    /// [`Session::insert`](crate::Session::insert), a value serde cannot
    /// serialize.
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

    /// A write after [`Session::purge`](crate::Session::purge) in the same
    /// request. A purge is final for its request: the cookie's session is
    /// deleted when the request commits, whatever the handler does next.
    #[error("the session was purged earlier in this request; nothing more can be written to it")]
    Purged,

    /// Fresh ids kept colliding with existing sessions. With 122 random bits
    /// this means the random source is broken; it is never a normal outcome.
    #[error("could not find an unused session id")]
    IdsExhausted,

    /// A [`Session`](crate::Session) was asked for on a route without
    /// [`SessionMiddleware`](crate::SessionMiddleware).
    #[error("the Session extractor needs SessionMiddleware on this route")]
    MiddlewareMissing,

    /// [`Session::incr`](crate::Session::incr) or
    /// [`Session::compare_and_set`](crate::Session::compare_and_set) on a
    /// field that is encrypted at rest: Redis can neither add to nor compare
    /// sealed bytes. Name the field in `session.encryption.plaintext_fields`
    /// to keep it plain. Nothing was written.
    #[error(
        "field {0:?} is encrypted at rest; incr and compare_and_set need it in session.encryption.plaintext_fields"
    )]
    SealedField(String),

    /// Not a user id: empty, over 256 bytes, or holding control characters.
    #[error("not a user id: 1 to 256 bytes, no control characters")]
    InvalidUser,

    /// The user's sessions were all revoked while this sign-in was under
    /// way (after [`Session::begin_sign_in`](crate::Session::begin_sign_in)):
    /// it did not happen, and the new session was deleted. A 401.
    #[error("the user's sessions were revoked while signing in; sign in again")]
    SignInRevoked,

    /// The request would have created a session, and the
    /// [`NewSessionGate`](crate::NewSessionGate) refused this client one
    /// more: nothing was written. A 429, with `Retry-After` (whole seconds,
    /// rounded up, at least 1) from `retry_after`.
    #[error("too many new sessions from this client; retry later")]
    TooManyNewSessions {
        /// How long the client should wait before it tries again.
        retry_after: Duration,
    },
}

impl SessionError {
    /// True when the store could not be reached: answer 503 and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(error) if error.is_unavailable())
    }

    /// True for bad data in this one session (a field that is not an
    /// integer, say): retrying will not help, starting the session over
    /// may. Never true for a fault of the store or of the deployment.
    pub fn is_invalid_data(&self) -> bool {
        matches!(self, Self::Store(StoreError::InvalidData(_)))
    }

    /// True when a write would have taken the session past its limits.
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(self, Self::Store(StoreError::LimitExceeded(_)))
    }

    /// When the client may try again, for a `Retry-After` header: 1 s while
    /// the store is unavailable, the gate's time for
    /// [`SessionError::TooManyNewSessions`], else `None` (retrying will not
    /// help).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            _ if self.is_unavailable() => Some(Duration::from_secs(1)),
            Self::TooManyNewSessions { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// [`SessionError::retry_after`] as a `Retry-After` value: whole
    /// seconds, rounded up, at least 1.
    pub fn retry_after_header(&self) -> Option<HeaderValue> {
        self.retry_after().map(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            HeaderValue::from(seconds.max(1))
        })
    }

    /// A short, stable code for the JSON body and for logs:
    /// `session_store_unavailable`, `session_too_large`,
    /// `session_data_invalid`, `session_store_fault`,
    /// `session_store_misconfigured`, `session_value_invalid`,
    /// `sign_in_revoked`, `too_many_new_sessions` or
    /// `session_internal_error`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Store(StoreError::Unavailable(_)) => "session_store_unavailable",
            Self::Store(StoreError::LimitExceeded(_)) => "session_too_large",
            Self::Store(StoreError::InvalidData(_)) | Self::Decode(_) => "session_data_invalid",
            Self::Store(StoreError::Misconfigured(_)) => "session_store_misconfigured",
            Self::Store(_) => "session_store_fault",
            Self::Encode(_) | Self::InvalidKey(_) | Self::Config(_) | Self::InvalidUser => {
                "session_value_invalid"
            }
            Self::SignInRevoked => "sign_in_revoked",
            Self::TooManyNewSessions { .. } => "too_many_new_sessions",
            Self::Purged | Self::IdsExhausted | Self::MiddlewareMissing | Self::SealedField(_) => {
                "session_internal_error"
            }
        }
    }

    /// How loud its one log line is: see the table above.
    fn log_level(&self) -> log::Level {
        match self {
            _ if self.is_limit_exceeded() => log::Level::Info,
            Self::SignInRevoked | Self::InvalidUser | Self::TooManyNewSessions { .. } => {
                log::Level::Info
            }
            _ if self.is_unavailable() || self.is_invalid_data() => log::Level::Warn,
            Self::Decode(_) => log::Level::Warn,
            _ => log::Level::Error,
        }
    }

    /// Logs it once, with its cause chain and `context` (a request line).
    /// Both may quote the client (a path, a field name): escaped.
    pub(crate) fn log(&self, context: &str) {
        log::log!(
            self.log_level(),
            "{}: {} ({})",
            Escaped(context),
            Escaped(error_chain(self)),
            self.code()
        );
    }

    /// The response for it, without logging: the JSON body and status in
    /// the type docs. What the middleware sends when a commit fails, unless
    /// the app chose otherwise
    /// ([`SessionMiddlewareBuilder::on_commit_error`](crate::SessionMiddlewareBuilder::on_commit_error)).
    pub fn json_response(&self) -> HttpResponse {
        let status = self.status_code();
        let message = match self {
            Self::Store(StoreError::LimitExceeded(limit)) => limit.to_string(),
            // The name is the handler's, and may be the client's: it stays
            // in the log.
            Self::InvalidKey(_) => "a session field name is empty or reserved".to_owned(),
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        let mut response = HttpResponse::build(status);
        response.insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")));
        // An error body is about this request: no cache may keep it.
        response.insert_header((CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(retry_after) = self.retry_after_header() {
            response.insert_header((RETRY_AFTER, retry_after));
        }
        response.body(body.to_string())
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
        } else if matches!(self, Self::SignInRevoked) {
            StatusCode::UNAUTHORIZED
        } else if matches!(self, Self::InvalidUser) {
            StatusCode::BAD_REQUEST
        } else if matches!(self, Self::TooManyNewSessions { .. }) {
            StatusCode::TOO_MANY_REQUESTS
        } else if self.is_limit_exceeded() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    /// [`SessionError::json_response`], logged once.
    fn error_response(&self) -> HttpResponse {
        self.log("a handler failed");
        self.json_response()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;
    use crate::store::Limit;

    fn body_of(error: &SessionError) -> serde_json::Value {
        let bytes = error
            .json_response()
            .into_body()
            .try_into_bytes()
            .expect("a full body");
        serde_json::from_slice(&bytes).expect("JSON")
    }

    #[test]
    fn an_unavailable_store_is_503_with_retry_after() {
        let error = SessionError::Store(StoreError::Unavailable("down".into()));
        let response = error.json_response();
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
    fn faults_of_the_store_and_of_the_deployment_are_500s_of_their_own() {
        let fault = SessionError::Store(StoreError::Backend("WRONGTYPE".into()));
        let denied = SessionError::Store(StoreError::Misconfigured("NOPERM".into()));
        let bad_data = SessionError::Store(StoreError::InvalidData("not an integer".into()));
        for (error, code) in [
            (&fault, "session_store_fault"),
            (&denied, "session_store_misconfigured"),
            (&bad_data, "session_data_invalid"),
        ] {
            assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(
                !error.is_unavailable()
                    && error.json_response().headers().get(RETRY_AFTER).is_none()
            );
            assert_eq!(body_of(error)["error"], code);
        }
        assert!(bad_data.is_invalid_data());
        assert!(!fault.is_invalid_data() && !denied.is_invalid_data());
    }

    #[test]
    fn a_refused_new_session_is_429_with_retry_after_rounded_up() {
        let error = SessionError::TooManyNewSessions {
            retry_after: Duration::from_millis(2_100),
        };
        let response = error.json_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
        assert_eq!(body_of(&error)["error"], "too_many_new_sessions");
        let soon = SessionError::TooManyNewSessions {
            retry_after: Duration::ZERO,
        };
        assert_eq!(
            soon.retry_after_header()
                .as_ref()
                .map(HeaderValue::as_bytes),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn other_failures_are_500_with_a_json_body() {
        let error = SessionError::InvalidKey("__created".into());
        assert_eq!(error.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body_of(&error)["error"], "session_value_invalid");
    }
}
