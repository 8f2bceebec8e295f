//! Every route, registered in one place.

mod count;
mod health;

use actix_web::web;

/// Registers all routes. `startup.rs` calls this once per worker.
///
/// | route | handler | what it does |
/// |---|---|---|
/// | `GET /count` | `routes/count.rs` | increments the session's `count` |
/// | `GET /healthz` | `routes/health.rs` | 200 while the process is up |
/// | `GET /readyz` | `routes/health.rs` | 200 if the session store answers, else 503 |
pub fn configure(routes: &mut web::ServiceConfig) {
    routes
        .route("/count", web::get().to(count::count))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz));
}
