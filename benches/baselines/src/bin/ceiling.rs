//! The ceiling: the same actix-web server answering `{"count":1}` with no
//! session and no Redis. Nothing that talks to Redis can beat it.
//!
//! Env: `PORT`, `WORKERS` (0 = one per core).

use actix_web::{App, HttpResponse, HttpServer, web};
use bench_baselines::{env_number, healthz};

async fn count() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "count": 1 }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = env_number("PORT", 8091);
    let workers: usize = env_number("WORKERS", 0);
    let mut server = HttpServer::new(|| {
        App::new()
            .route("/count", web::get().to(count))
            .route("/healthz", web::get().to(healthz))
    })
    .bind(("127.0.0.1", port))?;
    if workers > 0 {
        server = server.workers(workers);
    }
    server.run().await
}
