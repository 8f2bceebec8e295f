//! The SessionModule: distributed HTTP sessions for actix-web, stored as
//! Redis hashes.
//!
//! Every app node behind a load balancer reads and writes the same sessions
//! in Redis, so a user's next request may land on any node. This crate is
//! the Rust counterpart of the NestJS design's `SessionModule`, keeping its
//! data layout (a hash `sid_<id>`, one plain-string field per attribute, a
//! 30-minute TTL) so that Nest and Rust nodes can share one Redis, and fixing
//! what that design and the usual session libraries get wrong:
//!
//! - **No lost updates.** A session is a hash, not a blob: a request writes
//!   only the fields it changed, so requests changing different fields never
//!   clobber each other, and [`Session::incr`] / [`Session::compare_and_set`]
//!   are atomic in Redis.
//! - **Deletes win.** Every write checks, inside the same Lua script, that
//!   the session is still alive. A request in flight during a logout
//!   ([`Session::purge`]) writes nothing; it never re-creates the session.
//! - **Lazy, and one round trip per phase.** A handler that never touches
//!   its [`Session`] costs no Redis call (and works with Redis down). A read
//!   is one pipelined `HGETALL` + `PTTL`; a commit is one `EVALSHA`.
//! - **Two timeouts.** An idle timeout (the sliding TTL) and an absolute
//!   lifetime from creation, both enforced by Redis itself.
//! - **Fixation defence that works on Redis Cluster.** [`Session::renew`]
//!   moves the session to a fresh id whose key hashes to the same slot.
//!
//! # Wiring it into an actix-web app
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use redis_client::{RedisService, RedisSettings};
//! use session::{
//!     RedisSessionStore, Session, SessionError, SessionMiddleware, SessionService,
//!     SessionSettings, SessionStore,
//! };
//!
//! /// `GET /count`: one atomic increment, one round trip.
//! async fn count(session: Session) -> Result<HttpResponse, SessionError> {
//!     let count = session.incr("count", 1).await?;
//!     Ok(HttpResponse::Ok().json(serde_json::json!({ "count": count })))
//! }
//!
//! /// `POST /login`: a new id for the new privileges, and the user.
//! async fn login(session: Session, user: web::Json<String>) -> Result<HttpResponse, SessionError> {
//!     session.renew();
//!     session.insert("user", &user.into_inner())?;
//!     Ok(HttpResponse::Ok().finish())
//! }
//!
//! /// `GET /me`: a read; it writes nothing unless a TTL refresh is due.
//! async fn me(session: Session) -> Result<HttpResponse, SessionError> {
//!     let user: Option<String> = session.get("user").await?;
//!     Ok(HttpResponse::Ok().json(user))
//! }
//!
//! /// `POST /logout`: deleted in Redis after the handler; the cookie expires.
//! async fn logout(session: Session) -> HttpResponse {
//!     session.purge();
//!     HttpResponse::Ok().finish()
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Build the pool and the service ONCE; every worker shares them.
//!     let redis = RedisService::new(&RedisSettings::default())?;
//!     redis.wait_until_ready(Duration::from_secs(5)).await?;
//!     let settings = SessionSettings::default(); // sid_ keys, 30 min idle, 8 h absolute
//!     let store = RedisSessionStore::new(redis, settings.key_prefix.clone());
//!     store.prepare().await?; // load the script: the first write is one round trip too
//!     let sessions = SessionService::new(Arc::new(store), settings);
//!
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(SessionMiddleware::new(sessions.clone()))
//!             .route("/count", web::get().to(count))
//!             .route("/login", web::post().to(login))
//!             .route("/me", web::get().to(me))
//!             .route("/logout", web::post().to(logout))
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```
//!
//! The same app runs on [`MemorySessionStore`] (one process, no Redis), which
//! is how this example runs as a test:
//!
//! ```
//! use std::sync::Arc;
//! use actix_web::{App, HttpResponse, test, web};
//! use session::{MemorySessionStore, Session, SessionError, SessionMiddleware, SessionService, SessionSettings};
//!
//! async fn count(session: Session) -> Result<HttpResponse, SessionError> {
//!     Ok(HttpResponse::Ok().body(session.incr("count", 1).await?.to_string()))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let sessions = SessionService::new(Arc::new(MemorySessionStore::new()), SessionSettings::default());
//! let app = test::init_service(
//!     App::new().wrap(SessionMiddleware::new(sessions)).route("/count", web::get().to(count)),
//! )
//! .await;
//!
//! let first = test::call_service(&app, test::TestRequest::get().uri("/count").to_request()).await;
//! let cookie = first.response().cookies().next().expect("a session cookie").into_owned();
//! assert_eq!(test::read_body(first).await, "1");
//!
//! let second = test::TestRequest::get().uri("/count").cookie(cookie).to_request();
//! assert_eq!(test::read_body(test::call_service(&app, second).await).await, "2");
//! # });
//! ```
//!
//! A fuller program is `crates/session/examples/shop.rs`.
//!
//! # Round trips per request kind
//!
//! Against Redis, counted with `MONITOR` in the app's tests
//! (`crates/app/tests/api/round_trips.rs`):
//!
//! | the handler... | before it | after it (commit) | round trips |
//! |---|---|---|---|
//! | never uses its `Session` | - | - | 0 |
//! | reads (`get`, `entries`, `get_as`, `times`), TTL fresh | `HGETALL`+`PTTL` (pipelined, once) | - | 1 |
//! | reads, TTL refresh due | `HGETALL`+`PTTL` | `EVALSHA` (touch) | 2 |
//! | only writes (`insert`, `remove`, `clear`) | - | `EVALSHA` (update) | 1 |
//! | reads, then writes | `HGETALL`+`PTTL` | `EVALSHA` (update) | 2 |
//! | `incr` / `compare_and_set` | `EVALSHA` (at the call) | - | 1 |
//! | `renew` (+ writes) | - | `EVALSHA` (renew) | 1 |
//! | `purge` | - | `UNLINK` | 1 |
//! | any write with no session yet | - | `EVALSHA` (create) | 1 |
//!
//! A cookie naming a session that is gone costs one more: the write that
//! finds it gone, then the create of a fresh one. The id is never adopted.
//!
//! Immediate operations (`incr`, `compare_and_set`) happen at the call, not
//! at commit, because their result depends on what other requests did.
//!
//! # Data layout
//!
//! A session is a Redis hash at `{key_prefix}{id}` (`sid_<uuid>`): one field
//! per attribute, plain text for strings and numbers, JSON for anything else
//! ([`codec`]). Beside the user's fields it holds two metadata fields:
//!
//! - `__created`: creation time (ms since the epoch), the anchor of the
//!   absolute lifetime; it moves with the session on `renew`;
//! - `__seen`: the last write or TTL refresh (ms), for "last seen" pages.
//!
//! The key's TTL is `min(idle timeout, absolute end - now)`, set by Redis's
//! clock inside the script, so the absolute lifetime holds even if nobody
//! ever reads the session again. A session written by a NestJS node has no
//! `__created`; its absolute lifetime starts at the first Rust write.
//!
//! Every write runs `store/session_write.lua`; its header documents every
//! argument and reply.
//!
//! # `renew` on Redis Cluster
//!
//! A rename across hash slots fails with `CROSSSLOT`, which is why Spring
//! Session's rotation breaks on Cluster. Here the new id is drawn at random
//! until `sid_<new>` hashes to the same slot as `sid_<old>`
//! ([`slot::generate_in_same_slot`]: 16,384 draws on average, each a CRC16
//! of 40 bytes), so the script's `RENAME` is always single-slot and atomic.
//! The new id keeps 122 - 14 = 108 bits that the old id does not reveal.
//!
//! # Failure policy
//!
//! - Store errors reach handlers as [`SessionError`], which is also an actix
//!   `ResponseError` (503 + `Retry-After` when the store is unavailable, 413
//!   over the limits, 500 otherwise; JSON bodies).
//! - If the commit after the handler fails, the middleware replaces the
//!   response with that error: never an empty 500, never a cookie for a
//!   session that was not saved.
//! - A handler that returns an error, or any 5xx response, saves nothing
//!   (a purge still happens).
//! - Limits (`max_fields`, `max_bytes`) are checked by the script against
//!   the whole session: a write past them fails whole, nothing half-written.
//!
//! # Metrics
//!
//! Loads, commits (by op), creations, renewals, purges and commit failures
//! are recorded through the [`metrics`](https://docs.rs/metrics) facade:
//! free until the application installs a recorder. Names are in
//! [`metric_names`].
//!
//! # The Nest-style service
//!
//! [`SessionService`] also offers the NestJS `SessionService` calls
//! (`get_session`, `set_session`, plus `increment`, `inspect`,
//! `end_session`), for code outside a request.
//!
//! # Layout
//!
//! - `middleware.rs`: [`SessionMiddleware`].
//! - `session.rs`: [`Session`], the extractor, and the commit plan.
//! - `store/mod.rs`: the [`SessionStore`] trait; `store/redis.rs` +
//!   `store/session_write.lua`, and `store/memory.rs`: the two stores.
//! - `service.rs`: [`SessionService`].
//! - `settings.rs`: [`SessionSettings`].
//! - `id.rs`, `cookie.rs`, `codec.rs`, `slot.rs`, `error.rs`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod codec;
mod commit;
mod config;
mod cookie;
mod error;
mod extractor;
mod id;
pub mod metric_names;
mod middleware;
mod service;
mod session;
mod settings;
mod slot;
mod store;

pub use builder::SessionMiddlewareBuilder;
pub use codec::SessionFields;
pub use config::ConfigError;
pub use error::SessionError;
pub use id::SessionId;
pub use middleware::SessionMiddleware;
#[doc(hidden)]
pub use middleware::SessionMiddlewareService;
pub use service::{Counted, SessionService, SessionView};
pub use session::{Session, SessionStatus, SessionTimes};
pub use settings::{CookieMode, SameSite, SessionSettings};
pub use store::{
    Changes, Limit, LoadedSession, MemorySessionStore, RedisSessionStore, Renewal, SessionStore,
    StoreError, WritePolicy,
};
