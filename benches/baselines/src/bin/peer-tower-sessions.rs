//! The second peer: `GET /count` on axum + tower-sessions with its Redis
//! store (tower-sessions-redis-store, on fred), the way their documentation
//! wires it. Same route, same JSON, same cookie name as ours; not `Secure`
//! (plain http on 127.0.0.1), and a 30-minute inactivity expiry, as ours.
//!
//! The fred pool holds one connection per runtime worker thread, as ours
//! holds one per worker.
//!
//! Env: `REDIS_URL`, `PORT`, `WORKERS` (0 = one per core).

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bench_baselines::env_number;
use tower_sessions::cookie::time::Duration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};

async fn count(session: Session) -> Result<Json<serde_json::Value>, StatusCode> {
    let unavailable = |_| StatusCode::SERVICE_UNAVAILABLE;
    let count = session
        .get::<i64>("count")
        .await
        .map_err(unavailable)?
        .unwrap_or(0)
        + 1;
    session.insert("count", count).await.map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "count": count })))
}

/// `GET /healthz`: no session, no Redis, the same response as the app's and
/// the other baselines' (`bench_baselines::healthz` is actix-web's).
async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let port: u16 = env_number("PORT", 8093);
    let workers: usize = match env_number("WORKERS", 0) {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(serve(&redis_url, port, workers))
}

async fn serve(
    redis_url: &str,
    port: u16,
    connections: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let pool = Pool::new(Config::from_url(redis_url)?, None, None, None, connections)?;
    let _connection_tasks = pool.connect();
    pool.wait_for_connect().await?;
    let sessions = SessionManagerLayer::new(RedisStore::new(pool))
        .with_name("sid")
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(Duration::minutes(30)));
    let app = Router::new()
        .route("/count", get(count))
        .route("/healthz", get(healthz))
        // Around every route, as the other servers' session middleware is.
        .layer(sessions);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
