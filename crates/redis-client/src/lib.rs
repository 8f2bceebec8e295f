//! The RedisModule: a pooled Redis client and the hash operations that
//! distributed sessions need, each in ONE round trip.
//!
//! This is the Rust counterpart of the NestJS design's `RedisModule` /
//! `RedisService` (`hashGet` / `hashSet`). Where that service sent one `HSET`
//! per field and then an `EXPIRE` (three or more round trips, and a window in
//! which a half-written session is visible), every operation here is a single
//! command or a single Lua script, so each one is atomic and costs one round
//! trip.
//!
//! # Getting started
//!
//! ```no_run
//! use std::time::Duration;
//! use redis_client::{RedisService, RedisSettings, Retry, ScriptCall};
//! use redis_client::redis::Script;
//!
//! # async fn demo() -> Result<(), redis_client::RedisClientError> {
//! let settings = RedisSettings { url: "redis://127.0.0.1:6379".into(), ..Default::default() };
//! let redis = RedisService::new(&settings)?;          // no I/O yet
//! redis.wait_until_ready(Duration::from_secs(5)).await?; // PING until it answers
//!
//! // A check and a write in one atomic round trip: a Lua script by EVALSHA.
//! let add_if_exists = Script::new(
//!     "if redis.call('EXISTS', KEYS[1]) == 0 then return false end \
//!      return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)",
//! );
//! redis.load_script(&add_if_exists).await?;
//! // HINCRBY must not run twice if a reply is lost: see `Retry`.
//! let mut call = ScriptCall::new(&add_if_exists, &["sid_example"]);
//! call.arg("count");
//! let added: Option<i64> = redis.run_script(&call, Retry::NotIdempotent).await?;
//! assert_eq!(added, None); // no such hash: nothing was created
//!
//! let fields = redis.hash_get_all("sid_example").await?;
//! assert!(fields.is_empty());
//! # Ok(()) }
//! ```
//!
//! # Round trips
//!
//! | operation | Redis | round trips |
//! |---|---|---|
//! | [`RedisService::hash_get_all`] | `HGETALL` | 1 |
//! | [`RedisService::hash_get_all_with_ttl`] | `HGETALL` + `PTTL`, pipelined (a read-only script on a cluster) | 1 |
//! | [`RedisService::run_script`] | `EVALSHA` | 1 |
//! | [`RedisService::expire`] | `EXPIRE` | 1 |
//! | [`RedisService::delete`] | `UNLINK` | 1 |
//! | [`RedisService::ttl`] | `TTL` | 1 |
//!
//! Callers load their scripts at start-up with [`RedisService::load_script`].
//! If Redis restarts and forgets them, the next call gets `NOSCRIPT`, loads
//! the script (`SCRIPT LOAD`) and sends the call again: three round trips,
//! once per script per restart.
//!
//! Checking a connection out of the pool costs nothing: see `pool.rs` for
//! why we do not use deadpool-redis's manager, which PINGs on every checkout.
//!
//! # Timeouts
//!
//! Every wait is bounded by one of the [`RedisSettings`] timeouts, and
//! Redis being down, stopped or slow ends in
//! [`RedisClientError::Unavailable`]. What one call can add up to, exactly:
//!
//! - **the connection**: a thread that has none (the first call, or after a
//!   failure) leases or opens one within `wait_timeout_ms +
//!   connect_timeout_ms`, its wait for another call on the thread that is
//!   opening it included. A leased connection idle for
//!   `idle_check_after_ms` is PINGed first: one more `response_timeout_ms`
//!   at most, and then a new connection if it did not answer;
//! - **the reply**: `response_timeout_ms`. A script that Redis forgot
//!   (`NOSCRIPT`) costs two more replies: the `SCRIPT LOAD` and the resend;
//! - **a retry** (see [`Retry`]) is a second attempt, bounded the same way.
//!
//! So one call takes at most `2 × (wait + connect + 4 × response)` in the
//! worst case, and `response_timeout_ms` in the usual one (a live leased
//! connection, a known script). The session layer holds a whole request to
//! one budget of its own on top of this (`session.store_timeout_ms`).
//!
//! A timeout leaves the outcome of a write unknown: the command may already
//! sit in the server's socket buffer and run when the server wakes. Nothing
//! here re-sends a write after a timeout, so a timed-out `HINCRBY` counts at
//! most once, never twice
//! (`a_frozen_server_gives_unavailable_and_the_unanswered_increment_is_never_retried`
//! in the session crate's tests shows it).
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) facade, so they
//! cost nothing until the application installs a recorder (the app crate
//! exports them in the Prometheus format at `/metrics`). Names are in
//! [`metric_names`].
//!
//! # Layout
//!
//! - `settings.rs`: [`RedisSettings`], with a password-safe `Debug`.
//! - `error.rs`: [`RedisClientError`], unavailable vs rejected vs bad reply.
//! - `pool.rs`: the deadpool manager.
//! - `sentinel_watch.rs`: following a Sentinel failover through the
//!   Sentinels' event channels.
//! - `service.rs`: [`RedisService`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod metric_names;
mod pool;
mod script_call;
mod sentinel_watch;
mod service;
mod settings;

pub use error::RedisClientError;
pub use script_call::ScriptCall;
pub use service::{PoolStatus, RedisService, Retry};
pub use settings::{RedisMode, RedisSettings, TlsSettings};

/// The `redis` crate, re-exported so that no other crate depends on a second
/// version of it.
pub use deadpool_redis::redis;
