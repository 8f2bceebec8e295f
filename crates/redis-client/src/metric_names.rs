//! The names of the metrics this crate records, in Prometheus style.

/// Histogram: time from sending a command, script or pipeline to reading its
/// reply (the pool wait is not included).
pub const ROUND_TRIP_SECONDS: &str = "redis_round_trip_duration_seconds";

/// Counter, label `kind` (`unavailable`, `rejected`, `bad_reply`): failed
/// calls, pool wait failures included.
pub const ERRORS_TOTAL: &str = "redis_errors_total";

/// Counter: failed calls that were timeouts (pool wait, connect or reply).
pub const TIMEOUTS_TOTAL: &str = "redis_timeouts_total";

/// Counter: requests sent a second time, on a new connection, after a
/// failure that allowed it (see [`crate::Retry`]).
pub const RETRIES_TOTAL: &str = "redis_retries_total";

/// Counter: session loads sent to a replica that the master answered
/// instead (the replica lacked the key, or failed).
pub const REPLICA_FALLBACKS_TOTAL: &str = "redis_replica_fallbacks_total";

/// Counter: security-relevant writes (a logout, a login's renewal) that no
/// replica confirmed within `redis.durable_write_timeout_ms`, and that were
/// therefore reported as failed.
pub const DURABLE_WRITE_UNCONFIRMED_TOTAL: &str = "redis_durable_write_unconfirmed_total";
