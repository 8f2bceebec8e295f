//! Every route, registered in one place.

mod count;
mod health;
mod login;
mod logout;
mod me;
mod page;
mod sessions;

use actix_web::web;

/// Registers all routes. `startup.rs` calls this once per worker.
///
/// | route | handler | what it does |
/// |---|---|---|
/// | `GET /` | `routes/page.rs` | the demo page: count, node, TTL, buttons |
/// | `GET /count` | `routes/count.rs` | increments the session's `count` |
/// | `POST /login` | `routes/login.rs` | stores `{"user"}` on a renewed session id |
/// | `POST /logout` | `routes/logout.rs` | purges the session, expires the cookie |
/// | `GET /me` | `routes/me.rs` | the user and the session's times |
/// | `GET /sessions` | `routes/sessions.rs` | the signed-in user's sessions |
/// | `DELETE /sessions/{handle}` | `routes/sessions.rs` | ends one of them |
/// | `POST /logout/others` | `routes/sessions.rs` | ends all but this one |
/// | `POST /logout/everywhere` | `routes/sessions.rs` | ends all, this one too |
/// | `GET /healthz` | `routes/health.rs` | 200 while the process is up |
/// | `GET /readyz` | `routes/health.rs` | 200 if the session store answers, else 503 |
///
/// `GET /metrics` (Prometheus text format) is not among them: it is served
/// on a listener of its own, `server.metrics_addr` (`telemetry.rs`), so
/// that what fronts these routes never exposes it.
pub fn configure(routes: &mut web::ServiceConfig) {
    routes
        .app_data(json_config())
        .route("/", web::get().to(page::page))
        .route("/count", web::get().to(count::count))
        .route("/login", web::post().to(login::login))
        .route("/logout", web::post().to(logout::logout))
        .route("/me", web::get().to(me::me))
        .route("/sessions", web::get().to(sessions::list))
        .route("/sessions/{handle}", web::delete().to(sessions::revoke_one))
        .route("/logout/others", web::post().to(sessions::log_out_others))
        .route(
            "/logout/everywhere",
            web::post().to(sessions::log_out_everywhere),
        )
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}

/// Bodies are small JSON objects: 4 KiB is plenty, and a body that is not
/// JSON, too large or of the wrong shape gets a 400 with a JSON reason.
fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(4096)
        .error_handler(|error, _request| {
            let reason = error.to_string();
            crate::error::ApiError::BadRequest(reason).into()
        })
}
