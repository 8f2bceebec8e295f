//! The [`Session`] extractor: how a handler gets its request's session.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use crate::{Session, SessionError, SessionId, SessionService};

/// What [`SessionMiddleware`](crate::SessionMiddleware) hands every request,
/// in its app data: the store and settings to open the request's session
/// with. Its own type, so that it never collides with a `SessionService`
/// the app registers for its handlers.
#[derive(Debug)]
pub(crate) struct RequestSessions(pub(crate) SessionService);

impl FromRequest for Session {
    type Error = SessionError;
    type Future = std::future::Ready<Result<Self, SessionError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(open(req))
    }
}

/// The request's session: opened on the first call (the cookie parsed, no
/// store call yet) and kept in the request's extensions, where the
/// middleware commits it after the handler. Later calls return the same
/// session.
fn open(req: &HttpRequest) -> Result<Session, SessionError> {
    if let Some(open) = req.extensions().get::<Session>() {
        return Ok(open.clone());
    }
    let sessions = req
        .app_data::<RequestSessions>()
        .ok_or(SessionError::MiddlewareMissing)?;
    let service = sessions.0.clone();
    let (id, resign) =
        crate::cookie::session_id_from_headers(req.headers(), &service.config().cookie);
    // A legacy (NestJS) id is weak: it is accepted once, and the commit
    // moves its session to a fresh id (if it names a live one).
    let legacy = id.as_ref().is_some_and(SessionId::is_legacy);
    let session = Session::new(service, id);
    if legacy {
        session.renew();
    }
    session.0.borrow_mut().resign_cookie = resign;
    // Only with a gate: the peer address, and a trusted proxy's header.
    if let Some(gate) = sessions.0.gate() {
        session.0.borrow_mut().client = crate::gate::Client::of(req, gate);
    }
    session.0.borrow_mut().user_agent = req
        .headers()
        .get(actix_web::http::header::USER_AGENT)
        .cloned();
    req.extensions_mut().insert(session.clone());
    Ok(session)
}
