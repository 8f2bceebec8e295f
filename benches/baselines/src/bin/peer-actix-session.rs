//! The peer: `GET /count` on actix-session with its Redis store, the way its
//! documentation wires it. Same route, same JSON, same cookie name as ours.
//!
//! Env: `REDIS_URL`, `PORT`, `WORKERS` (0 = one per core).

use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::Key;
use actix_web::{App, HttpResponse, HttpServer, web};
use bench_baselines::{env_number, healthz};

async fn count(session: Session) -> actix_web::Result<HttpResponse> {
    let count = session.get::<i64>("count")?.unwrap_or(0) + 1;
    session.insert("count", count)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let port: u16 = env_number("PORT", 8090);
    let workers: usize = env_number("WORKERS", 0);
    let store = RedisSessionStore::new(redis_url)
        .await
        .expect("Redis answers");
    let key = Key::generate();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(
                SessionMiddleware::builder(store.clone(), key.clone())
                    .cookie_name("sid".to_owned())
                    .cookie_secure(false)
                    .build(),
            )
            .route("/count", web::get().to(count))
            .route("/healthz", web::get().to(healthz))
    })
    .bind(("127.0.0.1", port))?;
    if workers > 0 {
        server = server.workers(workers);
    }
    server.run().await
}
