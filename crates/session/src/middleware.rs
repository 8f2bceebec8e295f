//! [`SessionMiddleware`]: hands each request the means to open its session
//! on first use, and commits the session after the handler.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{
    Extensions, Service, ServiceRequest, ServiceResponse, Transform, forward_ready,
};
use actix_web::http::header::{HeaderValue, SET_COOKIE};
use actix_web::{Error, HttpMessage, ResponseError};

use crate::cookie::{removal_cookie, session_cookie};
use crate::session::CookieUpdate;
use crate::{Session, SessionService};

/// Gives every request a [`Session`] and commits it after the handler.
///
/// Lazily: a request whose handler never extracts [`Session`] costs no
/// cookie parsing, no session object and no store call. The first extraction
/// parses the cookie; still no store call. After the handler:
///
/// - no session was extracted, or nothing changed and no refresh is due: no
///   store call, no `Set-Cookie`;
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
        let mut data = Extensions::new();
        data.insert(ActiveSessions(self.sessions.clone()));
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            data: Rc::new(data),
        }))
    }
}

/// What the [`Session`] extractor finds in the app data of every request
/// that passes through [`SessionMiddleware`]: the store and settings to open
/// the request's session with. Its own type, so that it never collides with
/// a `SessionService` the app registers for its handlers.
#[derive(Debug)]
pub(crate) struct ActiveSessions(pub(crate) SessionService);

/// The service [`SessionMiddleware`] wraps around each route.
#[derive(Debug)]
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    /// One [`ActiveSessions`], the same for every request: handed to each
    /// request as an app data container, which costs a reference count.
    data: Rc<Extensions>,
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

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        // No session yet: the `Session` extractor opens one on first use.
        // Parsing the cookie and building the session up front for every
        // request cost about 3,000 instructions on routes that never use it
        // (benches/results/). This is the same mechanism actix-web's own
        // resources and scopes use for their app data. It needs the request
        // not to be shared yet, as actix's router does right after (it
        // panics in `match_info_mut` when an outer middleware holds a clone
        // of the `HttpRequest`), so it adds no constraint of its own.
        req.add_data_container(Rc::clone(&self.data));
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            let mut response = service.call(req).await?;
            let opened = response.request().extensions_mut().remove::<Session>();
            let Some(session) = opened else {
                return Ok(response.map_into_left_body());
            };
            let sessions = session.service();
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
