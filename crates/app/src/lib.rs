//! The AppController and main: an actix-web server whose `GET /count` keeps
//! a counter in a distributed session.
//!
//! - `settings.rs`: [`settings::Settings`], loaded in layers.
//! - `startup.rs`: [`startup::Application`], built once, run until stopped.
//! - `routes/`: every route, registered in [`routes::configure`].
//! - `error.rs`: [`error::ApiError`], errors mapped to HTTP in one place.
//! - `telemetry.rs`: `/metrics` on its own listener (`server.metrics_addr`),
//!   request metrics.
//! - `new_sessions.rs`: the per-client limit on new sessions, and the
//!   trusted proxies that name the client.
//! - `access_log.rs`: the access log, written off the worker threads.
//! - `inspect.rs`: the `session-inspect` tool (`src/bin/session-inspect.rs`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access_log;
pub mod error;
pub mod inspect;
pub mod new_sessions;
pub mod origin;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod telemetry;
