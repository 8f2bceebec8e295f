//! [`SessionMiddleware`]: hands each request the means to open its session
//! on first use, and commits the session after the handler.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{
    Extensions, Service, ServiceRequest, ServiceResponse, Transform, forward_ready,
};
use actix_web::http::header::{HeaderValue, SET_COOKIE};
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse};

use crate::commit::CookieUpdate;
use crate::cookie::{removal_cookie, session_cookie_header};
use crate::extractor::RequestSessions;
use crate::{Session, SessionError, SessionService};

/// What answers a request whose handler succeeded but whose session could
/// not be saved: see [`SessionMiddlewareBuilder::on_commit_error`].
pub(crate) type CommitErrorHandler =
    Arc<dyn Fn(&SessionError, &HttpRequest) -> HttpResponse + Send + Sync>;

/// Gives every request a [`Session`] and commits it after the handler.
///
/// Build it with [`SessionMiddleware::builder`] (in `builder.rs`); every
/// setting is checked there, once.
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
/// - the handler returned an error, or any 5xx response: the recorded
///   changes are dropped, since the handler may have stopped half-way. A
///   purge still happens; immediate writes (`incr`, `compare_and_set`)
///   already happened, and if one created the session its cookie is sent;
/// - the write fails: the failure is logged once and the handler's response
///   is replaced by [`SessionError::json_response`] (503 with
///   `Retry-After: 1` when the store is unavailable), or by what
///   [`SessionMiddlewareBuilder::on_commit_error`](crate::SessionMiddlewareBuilder::on_commit_error) returns.
///
/// ```no_run
/// use actix_web::{App, HttpServer, web};
/// use session::{MemorySessionStore, Session, SessionError, SessionMiddleware};
///
/// async fn visits(session: Session) -> Result<String, SessionError> {
///     Ok(format!("visit #{}", session.incr("visits", 1).await?))
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let sessions = SessionMiddleware::builder(MemorySessionStore::new()).build()?;
/// HttpServer::new(move || App::new().wrap(sessions.clone()).route("/", web::get().to(visits)))
///     .bind(("127.0.0.1", 8080))?
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionMiddleware {
    sessions: SessionService,
    on_commit_error: CommitErrorHandler,
}

impl std::fmt::Debug for SessionMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddleware")
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl SessionMiddleware {
    pub(crate) fn from_parts(
        sessions: SessionService,
        on_commit_error: CommitErrorHandler,
    ) -> Self {
        Self {
            sessions,
            on_commit_error,
        }
    }

    /// The service behind it: the store and the settings, for handlers that
    /// work on sessions outside their own request (register it with
    /// `web::Data::new(middleware.service())`) and for health checks.
    pub fn service(&self) -> SessionService {
        self.sessions.clone()
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
        data.insert(RequestSessions(self.sessions.clone()));
        ready(Ok(SessionMiddlewareService {
            service: Rc::new(service),
            data: Rc::new(data),
            on_commit_error: Arc::clone(&self.on_commit_error),
        }))
    }
}

/// The service [`SessionMiddleware`] wraps around each route: actix names
/// it, applications never need to.
#[doc(hidden)]
pub struct SessionMiddlewareService<S> {
    service: Rc<S>,
    /// One [`RequestSessions`], the same for every request: handed to each
    /// request as an app data container, which costs a reference count.
    data: Rc<Extensions>,
    on_commit_error: CommitErrorHandler,
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
        // No session yet: the `Session` extractor opens one on first use, so
        // routes that never use it pay neither the cookie parsing nor the
        // session object. This is the same mechanism actix-web's own
        // resources and scopes use for their app data. It needs the request
        // not to be shared yet, as actix's router does right after (it
        // panics in `match_info_mut` when an outer middleware holds a clone
        // of the `HttpRequest`), so it adds no constraint of its own.
        req.add_data_container(Rc::clone(&self.data));
        let service = Rc::clone(&self.service);
        let on_commit_error = Arc::clone(&self.on_commit_error);
        Box::pin(async move {
            let mut response = service.call(req).await?;
            let opened = response.request().extensions_mut().remove::<Session>();
            let Some(session) = opened else {
                return Ok(response.map_into_left_body());
            };
            let sessions = session.0.borrow().sessions.clone();
            // A handler that failed (an error it returned, or any 5xx) may
            // have stopped half-way through its changes: save none of them.
            let failed =
                response.status().is_server_error() || response.response().error().is_some();
            match session.commit(failed).await {
                Ok(mut update) => {
                    if update == CookieUpdate::Keep && !failed {
                        // A cookie signed by an older key goes back signed
                        // by the current one, but only for the cookie's own
                        // session, known alive (read, or written at once):
                        // never for a dead id or one nobody checked.
                        let state = session.0.borrow();
                        let alive = matches!(state.snapshot, crate::session::Snapshot::Live(_))
                            || state.written;
                        if state.resign_cookie
                            && alive
                            && !state.stale_cookie
                            && state.id.is_some()
                            && state.id == state.cookie_id
                            && let Some(id) = &state.id
                        {
                            update = CookieUpdate::Set(id.clone());
                        }
                    }
                    let cookie = match update {
                        CookieUpdate::Keep => None,
                        CookieUpdate::Set(id) => {
                            Some(session_cookie_header(&id, &sessions.config().cookie))
                        }
                        CookieUpdate::Remove => {
                            Some(removal_cookie(&sessions.config().cookie).to_string())
                        }
                    };
                    if let Some(cookie) = cookie {
                        // Cookie values are ids and fixed attributes: always
                        // a valid header value.
                        if let Ok(value) = HeaderValue::from_str(&cookie) {
                            response.headers_mut().append(SET_COOKIE, value);
                        }
                    }
                    Ok(response.map_into_left_body())
                }
                Err(error) => {
                    metrics::counter!(crate::metric_names::COMMIT_FAILURES_TOTAL).increment(1);
                    let request = response.request();
                    error.log(&format!(
                        "session commit failed for {} {}",
                        request.method(),
                        request.path()
                    ));
                    let mut replacement = on_commit_error(&error, request);
                    // An incr or compare_and_set that created the session
                    // already wrote it: its cookie still goes out, or no
                    // browser could reach that write.
                    let created = {
                        let state = session.0.borrow();
                        state.id.clone().filter(|_| state.issued && state.written)
                    };
                    if let Some(id) = created {
                        let cookie = session_cookie_header(&id, &sessions.config().cookie);
                        if let Ok(value) = HeaderValue::from_str(&cookie) {
                            replacement.headers_mut().append(SET_COOKIE, value);
                        }
                    }
                    Ok(response.into_response(replacement).map_into_right_body())
                }
            }
        })
    }
}
