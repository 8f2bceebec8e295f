//! A small shop on distributed sessions: a cart that concurrent tabs can
//! fill without losing items, a one-time checkout, login and logout.
//!
//! ```text
//! cargo run -p session --example shop                               # memory store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p session --example shop  # shared Redis
//!
//! curl -c jar -b jar -X POST localhost:8081/cart/apple      # {"apple":1}
//! curl -c jar -b jar -X POST localhost:8081/cart/apple      # {"apple":2}
//! curl -c jar -b jar -X POST localhost:8081/login/ada       # new id, same cart
//! curl -c jar -b jar -X POST localhost:8081/checkout        # {"paid":true}
//! curl -c jar -b jar -X POST localhost:8081/checkout        # {"paid":false}: once only
//! curl -c jar -b jar -X POST localhost:8081/logout
//! ```

use std::collections::BTreeMap;

use actix_web::{App, HttpResponse, HttpServer, web};
use redis_client::RedisSettings;
use session::{MemorySessionStore, RedisSessionStore, Session, SessionError, SessionMiddleware};

/// Cart lines are fields `item:<name>` holding a quantity.
const ITEM_PREFIX: &str = "item:";

/// Adds one of `item`: an atomic `HINCRBY` on its own field, so two tabs
/// adding different items, or the same one, never lose an addition.
async fn add(session: Session, item: web::Path<String>) -> Result<HttpResponse, SessionError> {
    session.incr(&format!("{ITEM_PREFIX}{item}"), 1).await?;
    cart(session).await
}

/// The cart: every `item:` field of the session (one load).
async fn cart(session: Session) -> Result<HttpResponse, SessionError> {
    let lines: BTreeMap<String, i64> = session
        .entries()
        .await?
        .into_iter()
        .filter_map(|(field, quantity)| {
            let item = field.strip_prefix(ITEM_PREFIX)?.to_owned();
            Some((item, quantity.parse().ok()?))
        })
        .collect();
    Ok(HttpResponse::Ok().json(lines))
}

/// Pays once: the `order` field moves from absent to "paid" atomically, so a
/// double click, or two tabs, cannot pay twice.
async fn checkout(session: Session) -> Result<HttpResponse, SessionError> {
    let paid = session
        .compare_and_set::<str>("order", None, "paid")
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "paid": paid })))
}

/// Signs in on a fresh session id; the cart comes along.
async fn login(session: Session, user: web::Path<String>) -> Result<HttpResponse, SessionError> {
    session.renew();
    session.insert("user", user.as_str())?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "user": user.as_str() })))
}

/// Ends the session everywhere; requests still in flight cannot revive it.
async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let builder = match std::env::var("REDIS_URL") {
        Ok(url) => {
            let settings = RedisSettings {
                url,
                ..RedisSettings::default()
            };
            SessionMiddleware::builder(RedisSessionStore::connect(&settings).await?)
        }
        Err(_) => SessionMiddleware::builder(MemorySessionStore::new()),
    };
    let sessions = builder.build()?;
    println!("shop on http://127.0.0.1:8081");
    HttpServer::new(move || {
        App::new()
            .wrap(sessions.clone())
            .route("/cart", web::get().to(cart))
            .route("/cart/{item}", web::post().to(add))
            .route("/checkout", web::post().to(checkout))
            .route("/login/{user}", web::post().to(login))
            .route("/logout", web::post().to(logout))
    })
    .bind(("127.0.0.1", 8081))?
    .run()
    .await?;
    Ok(())
}
