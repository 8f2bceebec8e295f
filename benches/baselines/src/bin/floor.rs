//! The one-round-trip floor: `GET /count` as ONE bare `HINCRBY` on
//! `floor_<sid cookie>`, and nothing else. No guard against re-creating a
//! logged-out session, no TTL, no metadata, no limits, no new cookie. Any
//! session layer that keeps its data in Redis does at least this much per
//! request, so no such layer can beat it: it bounds what the ratio targets
//! can reach on this machine.
//!
//! Each worker thread opens its own multiplexed connection on first use, so
//! its driver runs on the worker's own runtime (as ours does).
//!
//! Env: `REDIS_URL`, `PORT`, `WORKERS` (0 = one per core).

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bench_baselines::{env_number, healthz};
use redis::aio::MultiplexedConnection;
use tokio::sync::OnceCell;

struct Redis {
    client: redis::Client,
    /// This worker's connection.
    connection: OnceCell<MultiplexedConnection>,
}

async fn count(request: HttpRequest, redis: web::Data<Redis>) -> actix_web::Result<HttpResponse> {
    let sid = request.cookie("sid").map_or_else(
        || "anonymous".to_owned(),
        |cookie| cookie.value().to_owned(),
    );
    let mut connection = redis
        .connection
        .get_or_try_init(|| redis.client.get_multiplexed_async_connection())
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?
        .clone();
    let count: i64 = redis::cmd("HINCRBY")
        .arg(format!("floor_{sid}"))
        .arg("count")
        .arg(1)
        .query_async(&mut connection)
        .await
        .map_err(actix_web::error::ErrorServiceUnavailable)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let port: u16 = env_number("PORT", 8092);
    let workers: usize = env_number("WORKERS", 0);
    let client = redis::Client::open(redis_url).expect("a valid REDIS_URL");
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(Redis {
                client: client.clone(),
                connection: OnceCell::new(),
            }))
            .route("/count", web::get().to(count))
            .route("/healthz", web::get().to(healthz))
    })
    .bind(("127.0.0.1", port))?;
    if workers > 0 {
        server = server.workers(workers);
    }
    server.run().await
}
