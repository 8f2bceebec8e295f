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
//!   moves the session to a fresh id; on a cluster, one whose key hashes to
//!   the same slot.
//!
//! # Vocabulary
//!
//! - **Session id**: 122 random bits as a v4 UUID ([`SessionId`]), the only
//!   thing the browser holds. Logs show its first 8 characters only.
//! - **Session state**: the fields stored under the id, strings in Redis
//!   (numbers as decimal text, anything structured as JSON).
//! - **Cookie**: carries the id; its name, `Path`, `Domain`, `SameSite`,
//!   `Secure`, `HttpOnly` and lifetime are [`SessionSettings`].
//!
//! # Getting started: three statements
//!
//! Connect the store, build the middleware, wrap the app:
//!
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use redis_client::RedisSettings;
//! use session::{RedisSessionStore, Session, SessionError, SessionMiddleware};
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
//!     // 1. Connect, wait for Redis (redis.startup_wait_ms), load the script.
//!     let store = RedisSessionStore::connect(&RedisSettings::default()).await?;
//!     // 2. Every setting checked here, once: a bad one names its key.
//!     let sessions = SessionMiddleware::builder(store).build()?;
//!     // 3. Every worker shares the same store through a clone.
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(sessions.clone())
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
//! `crates/session/examples/quickstart.rs` is that program, and a test runs
//! it against a real redis-server; `examples/shop.rs` is a fuller one. The
//! same app runs on [`MemorySessionStore`] (one process, no Redis), which
//! is how this example runs as a test:
//!
//! ```
//! use actix_web::{App, HttpResponse, test, web};
//! use session::{MemorySessionStore, Session, SessionError, SessionMiddleware};
//!
//! async fn count(session: Session) -> Result<HttpResponse, SessionError> {
//!     Ok(HttpResponse::Ok().body(session.incr("count", 1).await?.to_string()))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let sessions = SessionMiddleware::builder(MemorySessionStore::new()).build().unwrap();
//! let app = test::init_service(
//!     App::new().wrap(sessions).route("/count", web::get().to(count)),
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
//! Settings come one builder method at a time, or all at once from a
//! [`SessionSettings`] that the `config` crate filled in
//! ([`SessionMiddlewareBuilder::settings`]). Code outside a request (an
//! admin page, a job) uses [`SessionMiddleware::service`].
//!
//! # Round trips per request kind
//!
//! Against Redis, counted with `MONITOR` in the app's tests
//! (`crates/app/tests/api/round_trips.rs`):
//!
//! | the handler... | before it | after it (commit) | round trips |
//! |---|---|---|---|
//! | never uses its `Session` | - | - | 0 |
//! | reads (`get`, `contains_key`, `entries`, `get_as`, `times`), TTL fresh | `HGETALL`+`PTTL` (pipelined, once) | - | 1 |
//! | reads, TTL refresh due | `HGETALL`+`PTTL` | `EVALSHA` (touch) | 2 |
//! | only writes (`insert`, `remove`, `clear`) | - | `EVALSHA` (update) | 1 |
//! | reads, then writes | `HGETALL`+`PTTL` | `EVALSHA` (update) | 2 |
//! | `incr` / `compare_and_set` | `EVALSHA` (at the call) | - | 1 |
//! | `renew` (+ writes) | - | `HGETALL`+`PTTL` (is it signed in?) unless read, then `EVALSHA` (renew), pipelined with `WAIT 1` on Sentinel / Cluster | 2 |
//! | `sign_in` | `HGET` (the user's epoch, at `begin_sign_in`) | the load unless read, `EVALSHA` (renew), `EVALSHA` (join the user's index), each write pipelined with `WAIT 1` on Sentinel / Cluster | 4 |
//! | `renew` of a signed-in session | - | the load unless read, `HGET` (the epoch), `EVALSHA` (renew), `EVALSHA` (move its index entry to the new id, if nothing ended it), each write pipelined with `WAIT 1` on Sentinel / Cluster | 4 |
//! | `purge` | - | the load unless read; if signed in, `EVALSHA` (mark its index entry as being ended); `UNLINK`, pipelined with `WAIT 1` on Sentinel / Cluster; if signed in, `EVALSHA` (drop the entry) | 2 (4) |
//! | any write with no session yet | - | `EVALSHA` (create) | 1 |
//!
//! A cookie naming a session that is gone costs one more: the write that
//! finds it gone, then the create of a fresh one. The id is never adopted.
//!
//! Immediate operations (`incr`, `compare_and_set`) happen at the call, not
//! at commit, because their result depends on what other requests did.
//!
//! # Failure policy, as built
//!
//! - **Errors by class** ([`SessionError`], [`StoreError`]): the store
//!   unavailable is a 503 with `Retry-After: 1`; a session past its limits a
//!   413; bad data in one session (a field that is not an integer), a fault
//!   of the store (`WRONGTYPE`, a script error, `CROSSSLOT`) and a store
//!   that refuses this client (credentials, `NOPERM`) are 500s, each with
//!   its own code. Each failure is logged once, with its cause chain. Only
//!   bad data in one session is ever a reason to start the user over.
//! - **A failed commit** (the handler succeeded, the write did not) replaces
//!   the response with the error's, in the same JSON shape a handler gets
//!   by returning the error, or with what
//!   [`SessionMiddlewareBuilder::on_commit_error`] returns. No cookie goes
//!   out for a session that was not saved.
//! - **A failed handler** (it returned an error, or any 5xx): the changes it
//!   recorded (`insert`, `remove`, `clear`, `renew`) are dropped, since it
//!   may have stopped half-way. A purge still happens. Immediate operations
//!   already happened and stand; if one created the session, its cookie is
//!   still sent, so the write is not stranded where no browser can reach it.
//! - **Logouts and logins survive a failover.** On Sentinel and Cluster a
//!   purge and a renewal wait for a replica to confirm them
//!   (`redis.durable_write_timeout_ms`); unconfirmed, they fail with
//!   [`StoreError::Unavailable`], a 503, rather than report a logout that
//!   a failover could undo.
//! - **Purge is final** for its request: later writes fail with
//!   [`SessionError::Purged`], and the cookie's session is deleted.
//! - **New sessions can be gated**: with a [`NewSessionGate`]
//!   ([`SessionMiddlewareBuilder::new_session_gate`]), each session a
//!   request would create (no cookie, or one naming no live session) is
//!   asked for first; a refusal is [`SessionError::TooManyNewSessions`], a
//!   429 with `Retry-After`, and nothing is written. Requests on live
//!   sessions never meet it.
//! - **Limits** (`max_fields`, `max_bytes`) are checked by the script
//!   against the whole session, before its first write: a write past them
//!   fails whole, nothing half-written.
//!
//! # Time
//!
//! All store calls of one request (the load, immediate operations, the
//! commit, a retry, a `NOSCRIPT` reload) share one budget,
//! `session.store_timeout_ms` (2 s by default), counted from the first
//! call. Past it the request gets a 503. Each Redis call is bounded by the
//! client's own timeouts as well (see `redis_client`'s "Timeouts"); the
//! budget is what holds when several of them would add up. A write cut
//! short by the budget may still run in Redis, at most once: nothing is
//! re-sent after a timeout.
//!
//! # Data layout
//!
//! A session is a Redis hash at `{key_prefix}{id}` (`sid_<uuid>`; the prefix
//! is [`RedisSessionStore::with_key_prefix`]'s): one field per attribute,
//! plain text for strings and numbers, JSON for anything else. Beside the
//! user's fields it holds two metadata fields, which user code cannot write
//! (names starting `__` are refused):
//!
//! - `__created`: creation time (ms since the epoch), the anchor of the
//!   absolute lifetime; it moves with the session on `renew`;
//! - `__seen`: the last TTL refresh (ms), for "last seen" pages.
//!
//! The key's TTL is `min(idle timeout, absolute end - now)`, set inside the
//! script, so the absolute lifetime holds even if nobody ever reads the
//! session again. A request slides it (and `__seen`) only once it has run
//! down by `session.touch_after_fraction` of the idle timeout (default a
//! quarter), reads and writes alike: a busy session is not refreshed on
//! every request. "Now" is the app node's clock, sent with each write:
//! nodes run NTP, and a skew of `s` moves an absolute end or a refresh by
//! at most `s`. A session written by a NestJS node has no `__created`; its
//! absolute lifetime starts at the first Rust write.
//!
//! Each write op runs its own script, `store/lua/<op>.lua` after
//! `store/lua/prelude.lua`, generated for the policy by `store/scripts.rs`;
//! each file's header documents its arguments and replies. Redis keeps
//! every script it loads, so the scripts a deployment loads are bounded by
//! its settings: the TTLs callers pass to [`SessionService::set_session`]
//! share one set of scripts that take the TTL as an argument (6 scripts,
//! of which `set_session` runs 2), whatever the number of distinct TTLs.
//!
//! # `renew` on Redis Cluster
//!
//! A rename across hash slots fails with `CROSSSLOT`, which is why Spring
//! Session's rotation breaks on Cluster. On a cluster the new id is drawn
//! so that `sid_<new>` hashes to the same slot as `sid_<old>`, and the
//! script's `RENAME` is single-slot and atomic; the new id keeps 108 random
//! bits that the old one does not reveal. On a single server or Sentinel
//! any fresh id will do, and no search runs.
//!
//! # Protecting session data
//!
//! Three switches, each off by default (a Nest node can read none of it):
//!
//! - **Values sealed at rest**: with `session.encryption.keys`, `build()`
//!   wraps the store in a [`SealedStore`]. Every user field but the named
//!   plaintext ones, and the signed-in user, is XChaCha20-Poly1305 under
//!   the first key of a [`KeyRing`], bound to its session and field; a
//!   value that does not open makes the session count as gone (never a
//!   5xx). `incr` and `compare_and_set` take plaintext fields only
//!   ([`SessionError::SealedField`]).
//! - **Ids hashed at rest**: [`RedisSessionStore::with_hashed_ids`] keys a
//!   session by SHA-256 of its id (`session.hash_ids`).
//! - **Signed cookies**: with `session.cookie_signing_keys`, the cookie is
//!   `<id>.<tag>` (HMAC-SHA256); a forged one costs no store call.
//!
//! ```
//! use session::{EncryptionSettings, SessionMiddleware, SessionSettings};
//! let settings = SessionSettings {
//!     encryption: EncryptionSettings {
//!         // head -c 32 /dev/urandom | base64; newest first.
//!         keys: ["k2:3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
//!             .into_iter()
//!             .collect(),
//!         plaintext_fields: vec!["count".to_owned()],
//!         ..Default::default()
//!     },
//!     ..Default::default()
//! };
//! let middleware = SessionMiddleware::builder(session::MemorySessionStore::new())
//!     .settings(settings)
//!     .build()?;
//! # let _ = middleware;
//! # Ok::<(), session::ConfigError>(())
//! ```
//!
//! The README's "Protecting session data" has the threat model, the value
//! format byte by byte, and the steps of a rotation and of a migration.
//!
//! # A store of your own
//!
//! Implement [`SessionStore`] (load, create, update, renew, increment,
//! compare-and-set, delete, health), returning [`LoadedSession`],
//! [`Renewal`] and [`StoreError`], and keeping the rules its docs list;
//! `tests/store_suite/` is the behaviour suite both shipped stores pass.
//!
//! # Metrics
//!
//! Loads, commits (by op), creations, renewals, purges and commit failures
//! are recorded through the [`metrics`](https://docs.rs/metrics) facade:
//! free until the application installs a recorder. Names are in
//! [`metric_names`].
//!
//! # Layout
//!
//! - `builder.rs`: [`SessionMiddlewareBuilder`]; `settings.rs`:
//!   [`SessionSettings`]; `config.rs`: the checks; `limits.rs`:
//!   [`ConfigError`] and the largest values.
//! - `middleware.rs`: [`SessionMiddleware`]; `extractor.rs`: the
//!   [`Session`] extractor.
//! - `session.rs`: the [`Session`] handle; `commit.rs`: what it writes
//!   after the handler.
//! - `service.rs`: [`SessionService`].
//! - `store/mod.rs`: the [`SessionStore`] trait; `store/redis.rs` +
//!   `store/lua/` (one script per op, joined by `store/scripts.rs`), and
//!   `store/memory.rs`: the two stores.
//! - `protect/`: [`KeyRing`], the sealed value format (`envelope.rs`),
//!   [`SealedStore`], signed cookies (`cookie_tag.rs`).
//! - `gate.rs`: [`NewSessionGate`], and the client address it is asked
//!   about.
//! - `id.rs`, `cookie.rs`, `codec.rs`, `slot.rs`, `error.rs`.
//! - `log_text.rs`: [`log_text::Escaped`], how client text (an error that
//!   quotes a field name, a path) appears in a log line: escaped, so that
//!   no client can break a line or forge one.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod builder;
mod codec;
mod commit;
mod config;
mod cookie;
mod error;
mod extractor;
mod gate;
mod id;
mod limits;
pub mod log_text;
pub mod metric_names;
mod middleware;
mod protect;
mod service;
mod session;
mod settings;
mod sign_in;
mod slot;
mod store;
mod user_sessions;

pub use builder::SessionMiddlewareBuilder;
pub use codec::SessionFields;
pub use error::SessionError;
pub use gate::NewSessionGate;
pub use id::SessionId;
pub use limits::ConfigError;
pub use middleware::SessionMiddleware;
#[doc(hidden)]
pub use middleware::SessionMiddlewareService;
pub use protect::{
    FieldState, InspectedField, Inspection, KEY_BYTES, KeyRing, MAX_KEY_ID_CHARS, SealedStore,
};
pub use service::{Counted, SessionService, SessionView};
pub use session::{Session, SessionStatus, SessionTimes};
pub use settings::{CookieMode, EncryptionSettings, SameSite, SecretList, SessionSettings};
pub use sign_in::{MAX_USER_AGENT_BYTES, SignIn};
pub use store::{
    Changes, Limit, LoadedSession, MAX_USER_ID_BYTES, MemorySessionStore, RedisSessionStore,
    Renewal, SessionHandle, SessionStore, StoreError, UserEntry, WritePolicy,
};
pub use user_sessions::UserSession;
