//! The SessionModule: distributed HTTP sessions stored as Redis hashes.
//!
//! Every app node behind a load balancer reads and writes the same sessions
//! in Redis, so a user's second request may land on any node. This crate is
//! the Rust counterpart of the NestJS design's `SessionModule`, keeping its
//! data layout (a hash `sid_<id>`, one plain-string field per attribute, a
//! 30-minute TTL) so that Nest and Rust nodes can share one Redis, and fixing
//! its faults: weak ids, session fixation, lost updates, and several round
//! trips per request.
//!
//! # Vocabulary
//!
//! - **Session id** ([`SessionId`]): a random v4 UUID naming one session. It
//!   travels in the cookie and is never logged whole.
//! - **Session state**: the fields stored under `{key_prefix}{id}`
//!   ([`SessionFields`]), encoded by the rules of [`codec`].
//! - **Cookie**: `sid=<id>; Max-Age=<ttl>; Path=/; HttpOnly; SameSite=Lax`
//!   ([`cookie::session_cookie`]), read back by
//!   [`cookie::session_id_from_headers`].
//! - **Store** ([`SessionStore`]): [`RedisSessionStore`] (shared) or
//!   [`MemorySessionStore`] (one process).
//!
//! # Getting started
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use redis_client::{RedisService, RedisSettings};
//! use serde::{Deserialize, Serialize};
//! use session::{RedisSessionStore, SessionService, SessionSettings};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Cart { items: u32, owner: String }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisService::new(&RedisSettings::default())?;
//! redis.wait_until_ready(Duration::from_secs(5)).await?;
//! let settings = SessionSettings::default();
//! let store = RedisSessionStore::new(redis, settings.key_prefix.clone());
//! let sessions = SessionService::new(Arc::new(store), settings);
//!
//! // No id yet: a fresh session is created and its id returned.
//! let id = sessions
//!     .set_session(None, &Cart { items: 1, owner: "ada".into() }, Duration::from_secs(1800))
//!     .await?;
//! let cart: Option<Cart> = sessions.get_session(id.as_str()).await?;
//! assert_eq!(cart.map(|c| c.items), Some(1));
//!
//! // Atomic counting: concurrent requests never lose an increment.
//! let counted = sessions.increment(Some(&id), "items", 1).await?;
//! assert_eq!(counted.value, 2);
//! # Ok(()) }
//! ```
//!
//! The same code runs on [`MemorySessionStore`] with no Redis at all:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use session::{MemorySessionStore, SessionService, SessionSettings};
//!
//! let sessions = SessionService::new(Arc::new(MemorySessionStore::new()), SessionSettings::default());
//! let first = sessions.increment(None, "count", 1).await.unwrap();
//! assert!(first.is_new);
//! let second = sessions.increment(Some(&first.id), "count", 1).await.unwrap();
//! assert_eq!((second.value, second.is_new), (2, false));
//! # });
//! ```
//!
//! # Round trips
//!
//! Against Redis, through [`RedisSessionStore`]:
//!
//! | call | case | Redis | round trips |
//! |---|---|---|---|
//! | [`SessionService::increment`] | existing session | `EVALSHA hash_incr_if_exists` | 1 |
//! | | no session id | `EVALSHA hash_write` (create) | 1 |
//! | | unknown or expired id | both of the above | 2 |
//! | [`SessionService::get_session`] | any id | `HGETALL` (none for a malformed id) | 1 |
//! | [`SessionService::set_session`] | existing session | `EVALSHA hash_write` (update) | 1 |
//! | | no id | `EVALSHA hash_write` (create) | 1 |
//! | | unknown id | update, then create | 2 |
//! | [`SessionService::inspect`] | any id | `HGETALL` + `PTTL`, pipelined | 1 |
//! | [`SessionService::end_session`] | any id | `UNLINK` | 1 |
//!
//! The NestJS original cost 2 round trips to read and 1 per field plus 1 to
//! write, and lost concurrent updates between them.
//!
//! # Layout
//!
//! - `id.rs`: [`SessionId`].
//! - `codec.rs`: values ↔ hash fields.
//! - `cookie.rs`: the cookie in, the cookie out.
//! - `settings.rs`: [`SessionSettings`].
//! - `store/mod.rs`: the [`SessionStore`] trait; `store/redis.rs` and
//!   `store/memory.rs`: the two stores.
//! - `slot.rs`: Redis Cluster hash slots, and ids drawn to share one.
//! - `service.rs`: [`SessionService`].
//! - `error.rs`: [`SessionError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod cookie;
mod error;
mod id;
mod middleware;
mod service;
mod session;
mod settings;
pub mod slot;
pub mod store;

pub use codec::SessionFields;
pub use error::SessionError;
pub(crate) use error::error_chain;
pub use id::SessionId;
pub use middleware::{SessionMiddleware, SessionMiddlewareService};
pub use service::{Counted, SessionService, SessionView};
pub use session::{Session, SessionTimes};
pub use settings::{CookieMode, SessionSettings, StoreKind};
pub use store::{
    Changes, LoadedSession, MemorySessionStore, RedisSessionStore, SessionStore, StoreError,
    WritePolicy,
};
