//! Every route, registered in one place.

mod count;
mod health;
mod logout;
mod page;

use actix_web::web;

/// Registers all routes. `startup.rs` calls this once per worker.
///
/// | route | handler | what it does |
/// |---|---|---|
/// | `GET /` | `routes/page.rs` | the demo page: count, node, TTL, buttons |
/// | `GET /count` | `routes/count.rs` | increments the session's `count` |
/// | `POST /logout` | `routes/logout.rs` | deletes the session, expires the cookie |
/// | `GET /healthz` | `routes/health.rs` | 200 while the process is up |
/// | `GET /readyz` | `routes/health.rs` | 200 if the session store answers, else 503 |
pub fn configure(routes: &mut web::ServiceConfig) {
    routes
        .route("/", web::get().to(page::page))
        .route("/count", web::get().to(count::count))
        .route("/logout", web::post().to(logout::logout))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}
