//! Redis sessions in an actix-web app of your own, wired in three statements
//! (marked 1, 2 and 3 below): connect the store, build the middleware, wrap
//! the app. `tests/quickstart_example.rs` runs this program against a real
//! redis-server.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p session --example quickstart
//! curl -c jar -b jar localhost:8082/count     # 1
//! curl -c jar -b jar localhost:8082/count     # 2
//! ```
//!
//! `BIND` sets the address (`127.0.0.1:0` picks a free port); the first
//! line printed names the one bound.

use actix_web::{App, HttpServer, web};
use redis_client::RedisSettings;
use session::{RedisSessionStore, Session, SessionError, SessionMiddleware};

/// One atomic `HINCRBY` in Redis per request: concurrent requests, on any
/// number of nodes, never lose a count.
async fn count(session: Session) -> Result<String, SessionError> {
    Ok(session.incr("count", 1).await?.to_string())
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = RedisSettings {
        url: std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
        ..RedisSettings::default()
    };
    let address = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:8082".to_owned());

    // 1. The store: connect, wait for Redis, load the script.
    let store = RedisSessionStore::connect(&redis).await?;
    // 2. The middleware: every setting checked here, once.
    let sessions = SessionMiddleware::builder(store).build()?;
    // 3. Wrap the app.
    let server = HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .route("/count", web::get().to(count))
    })
    .bind(address)?;

    println!("listening on http://{}", server.addrs()[0]);
    server.run().await?;
    Ok(())
}
