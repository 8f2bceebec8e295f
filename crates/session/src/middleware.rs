//! [`SessionMiddleware`]: reads the cookie before the handler, commits the
//! session after it.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::header::{HeaderValue, SET_COOKIE};
use actix_web::{Error, HttpMessage, ResponseError};

use crate::cookie::{removal_cookie, session_cookie, session_id_from_headers};
use crate::session::CookieUpdate;
use crate::{Session, SessionService};

/// Gives every request a [`Session`] and commits it after the handler.
///
/// Before the handler it only parses the cookie: no store call. After it:
///
/// - nothing changed and no refresh is due: no store call, no `Set-Cookie`;
/// - changes: one atomic write of the changed fields only, guarded so that it
///   never re-creates a session that was purged or expired meanwhile;
/// - a purge: one `UNLINK`, and a cookie that expires the browser's;
/// - the handler returned an error, or any 5xx response: nothing is
///   written (except a purge), since the handler may have stopped half-way;
/// - the write fails: the handler's response is replaced by the error's (503
///   with `Retry-After: 1` and a JSON body when the store is unavailable; see
///   [`crate::SessionError`]), never an empty 500.
///
/// ```no_run
/// use actix_web::{App, HttpServer, web};
/// use session::{Session, SessionError, SessionMiddleware, SessionService};
///
/// async fn visits(session: Session) -> Result<String, SessionError> {
///     Ok(format!("visit #{}", session.incr("visits", 1).await?))
/// }
///
/// # async fn run(sessions: SessionService) -> std::io::Result<()> {
/// HttpServer::new(move || {
///     App::new()
///         .wrap(SessionMiddleware::new(sessions.clone()))
///         .route("/", web::get().to(visits))
/// })
/// .bind(("127.0.0.1", 8080))?
/// .run()
/// .await
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SessionMiddleware {
    sessions: SessionService,
}

impl SessionMiddleware {
    /// A middleware storing sessions through `sessions`.
    pub fn new(sessions: SessionService) -> Self {
        Self { sessions }
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = SessionMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            sessions: self.sessions.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around each route.
#[derive(Debug)]
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    sessions: SessionService,
}

type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl<S, B> Service<ServiceRequest> for SessionMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let settings = self.sessions.settings();
        let id = session_id_from_headers(req.headers(), &settings.cookie_name);
        let session = Session::new(self.sessions.clone(), id);
        req.extensions_mut().insert(session.clone());
        let service = Rc::clone(&self.service);
        let sessions = self.sessions.clone();
        Box::pin(async move {
            let mut response = service.call(req).await?;
            // A handler that failed (an error it returned, or any 5xx) may
            // have stopped half-way through its changes: save none of them.
            let failed =
                response.status().is_server_error() || response.response().error().is_some();
            match session.commit(failed).await {
                Ok(update) => {
                    let cookie = match update {
                        CookieUpdate::Keep => None,
                        CookieUpdate::Set(id) => Some(session_cookie(&id, sessions.settings())),
                        CookieUpdate::Remove => Some(removal_cookie(sessions.settings())),
                    };
                    if let Some(cookie) = cookie {
                        // Cookie values are ids and fixed attributes: always
                        // a valid header value.
                        if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
                            response.headers_mut().append(SET_COOKIE, value);
                        }
                    }
                    Ok(response.map_into_left_body())
                }
                Err(error) => {
                    metrics::counter!(crate::metric_names::COMMIT_FAILURES_TOTAL).increment(1);
                    log::warn!(
                        "session commit failed for {} {}: {}",
                        response.request().method(),
                        response.request().path(),
                        crate::error_chain(&error)
                    );
                    let replacement = error.error_response();
                    Ok(response.into_response(replacement).map_into_right_body())
                }
            }
        })
    }
}
