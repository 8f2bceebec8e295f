//! The one error type of this crate, sorted by what the caller can do about it.

use deadpool_redis::redis::{ErrorKind, RedisError, ServerErrorKind};

/// What went wrong talking to Redis.
///
/// The variants separate "Redis is not there right now" (retry later, answer
/// 503) from "Redis refused this data" (a bug or corrupt data: retrying will
/// not help). The underlying [`RedisError`] is kept as the `source`, so a log
/// of the whole chain says exactly what happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisClientError {
    /// A setting can never work. Raised before any connection is tried.
    #[error("{0}")]
    InvalidSettings(String),

    /// Redis could not be reached or did not answer in time: the network, the
    /// server, the pool or a timeout. Usually passes; callers answer 503.
    #[error("Redis is unavailable: {reason}")]
    Unavailable {
        /// A short, lower-case cause such as `connection refused`, safe to show.
        reason: String,
        /// The client error, when there is one (a pool wait timeout has none).
        #[source]
        source: Option<RedisError>,
    },

    /// Redis refused us for who we are, not for what we sent: a wrong
    /// password, a user that does not exist, or an ACL that denies a command
    /// or a key (`NOPERM`). This is a deployment mistake, not an outage:
    /// retrying will not help, and it must not look like one (no 503).
    #[error("Redis refused the client: {reason}")]
    Misconfigured {
        /// A short cause naming the setting to check; never the password.
        reason: String,
        /// The client error.
        #[source]
        source: RedisError,
    },

    /// Redis ran the command and answered with an error about it: a key of
    /// another type (`WRONGTYPE`), a Lua runtime error inside a script, keys
    /// in different cluster slots (`CROSSSLOT`). A server-side fault or a
    /// bug; retrying will not help.
    #[error("Redis rejected the command")]
    Rejected(#[source] RedisError),

    /// Redis answered, but with a value of another shape than expected, for
    /// example bytes that are not UTF-8 where text was stored.
    #[error("Redis sent a reply that could not be read")]
    BadReply(#[source] RedisError),
}

impl RedisClientError {
    /// True when the failure is about reaching Redis, not about the data: the
    /// caller should answer "try again later".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// True when the failure was a timeout: waiting for a pooled connection,
    /// connecting, or waiting for a reply.
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Unavailable {
                source: Some(error),
                ..
            } => error.is_timeout(),
            Self::Unavailable { reason, .. } => reason.starts_with(POOL_TIMEOUT),
            _ => false,
        }
    }

    /// True when Redis refused the client itself (credentials, ACL): see
    /// [`RedisClientError::Misconfigured`].
    pub fn is_misconfigured(&self) -> bool {
        matches!(self, Self::Misconfigured { .. } | Self::InvalidSettings(_))
    }

    /// The variant's name for metrics labels: `unavailable`, `rejected`,
    /// `misconfigured`, `bad_reply` or `invalid_settings`.
    pub fn kind_label(&self) -> &'static str {
        match self {
            Self::InvalidSettings(_) => "invalid_settings",
            Self::Unavailable { .. } => "unavailable",
            Self::Misconfigured { .. } => "misconfigured",
            Self::Rejected(_) => "rejected",
            Self::BadReply(_) => "bad_reply",
        }
    }

    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    /// True when the connection that produced this error must not be reused.
    pub(crate) fn breaks_connection(&self) -> bool {
        match self {
            Self::Unavailable {
                source: Some(error),
                ..
            } => {
                error.is_unrecoverable_error()
                    || error.is_io_error()
                    || error.is_timeout()
                    // A master demoted by a failover answers READONLY; a
                    // replica cut off from its master, MASTERDOWN. A new
                    // connection finds the current master.
                    // (NOREPLICAS is not among them: the master is right,
                    // it only lacks replicas, and a new connection would
                    // reach the same server. If the Sentinels replace it,
                    // the switch drops its connections anyway.)
                    || matches!(
                        error.kind(),
                        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
                    )
            }
            _ => false,
        }
    }
}

impl RedisClientError {
    /// True when Redis answered that it did NOT run the command: a master
    /// demoted by a failover (`READONLY`), a replica cut off from its master
    /// (`MASTERDOWN`), a server still loading its data (`LOADING`), a slot
    /// being migrated or a cluster without quorum (`TRYAGAIN`,
    /// `CLUSTERDOWN`), a master short of replicas (`NOREPLICAS`, from
    /// `min-replicas-to-write`). Sending it again cannot apply it twice.
    pub(crate) fn proves_not_run(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { source: Some(error), .. }
                if error.code() == Some("NOREPLICAS") || matches!(
                    error.kind(),
                    ErrorKind::Server(
                        ServerErrorKind::ReadOnly
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::BusyLoading
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                    )
                )
        )
    }

    /// True when the connection failed under the request (reset, closed,
    /// broken pipe) without a timeout: Redis may or may not have run it,
    /// and a new connection will likely work.
    pub(crate) fn is_dropped_connection(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { source: Some(error), .. }
                if !error.is_timeout()
                    && (error.is_io_error() || error.is_unrecoverable_error())
                    && !error.is_connection_refusal()
        )
    }
}

/// `WRONGTYPE`, which redis-rs has no kind for, from a command or from the
/// first failing command of a pipeline.
fn is_wrong_type(error: &RedisError) -> bool {
    error.code() == Some("WRONGTYPE")
        || error.clone().into_server_errors().is_some_and(|errors| {
            errors
                .iter()
                .any(|(_, server)| server.code() == "WRONGTYPE")
        })
}

/// Authentication or ACL failures, from a command, a script's own
/// `redis.call`, or the handshake of a new connection.
fn misconfiguration(error: &RedisError) -> Option<String> {
    let auth = error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"));
    if auth {
        return Some("authentication failed: check redis.username and redis.password".to_owned());
    }
    let denied = matches!(error.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || error.code() == Some("NOPERM")
        // A script's redis.call that the ACL denies comes back as a plain
        // ERR whose text says so: "The user executing the script can't run
        // this command" (or "access ... key") in Redis 7.0, "... has no
        // permissions to ..." in later servers.
        || {
            let text = error.to_string();
            text.contains("The user executing the script can't") || text.contains("no permissions to")
        };
    // The ACL user lacks a command or a key pattern: see the README's ACL
    // line. Said plainly, as this is a deployment mistake.
    denied.then(|| format!("permission denied by the Redis ACL: {error}"))
}

impl From<RedisError> for RedisClientError {
    fn from(error: RedisError) -> Self {
        if let Some(reason) = misconfiguration(&error) {
            return Self::Misconfigured {
                reason,
                source: error,
            };
        }
        // `min-replicas-to-write`: a master that lost its replicas refuses
        // writes. It did not run the command, and passes once a replica is
        // back or a new master took over.
        if error.code() == Some("NOREPLICAS") {
            return Self::Unavailable {
                reason: "the master has too few replicas to take writes (min-replicas-to-write)"
                    .to_owned(),
                source: Some(error),
            };
        }
        match error.kind() {
            // Parse failures of OUR conversion of the reply (bad UTF-8, a
            // string where a number was expected): the data is odd, Redis is fine.
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse => Self::BadReply(error),
            // Errors about the key or its value, including those raised inside
            // a script by redis.call (WRONGTYPE, "not an integer", overflow).
            // CROSSSLOT is a request that can never run on this cluster.
            ErrorKind::Server(
                ServerErrorKind::ResponseError
                | ServerErrorKind::ExecAbort
                | ServerErrorKind::CrossSlot,
            ) => Self::Rejected(error),
            ErrorKind::Extension if is_wrong_type(&error) => Self::Rejected(error),
            // Everything else is about reaching a working server: I/O, refused
            // connections, timeouts, LOADING, READONLY after a failover,
            // CLUSTERDOWN, TRYAGAIN.
            _ => Self::Unavailable {
                reason: describe(&error),
                source: Some(error),
            },
        }
    }
}

/// How a pool wait timeout's reason begins (see `service.rs`).
pub(crate) const POOL_TIMEOUT: &str = "pool timed out";

/// A short, lower-case cause for the one-line messages people read.
pub(crate) fn describe(error: &RedisError) -> String {
    if error.is_connection_refusal() {
        "connection refused".to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connection_dropped() {
        "connection dropped".to_owned()
    } else if error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
    {
        "authentication failed: check redis.username and redis.password".to_owned()
    } else if matches!(error.kind(), ErrorKind::Server(ServerErrorKind::NoPerm))
        || error.code() == Some("NOPERM")
    {
        // The ACL user lacks a command or a key pattern: see the README's
        // ACL line. Said plainly, as this is a deployment mistake.
        format!("permission denied by the Redis ACL: {error}")
    } else {
        error.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> RedisError {
        RedisError::from(std::io::Error::from(kind))
    }

    #[test]
    fn a_refused_connection_is_unavailable_and_says_so() {
        let error = RedisClientError::from(io(std::io::ErrorKind::ConnectionRefused));
        assert!(error.is_unavailable());
        assert_eq!(
            error.to_string(),
            "Redis is unavailable: connection refused"
        );
        assert!(error.breaks_connection());
    }

    #[test]
    fn a_pool_wait_timeout_counts_as_a_timeout() {
        let error = RedisClientError::unavailable(format!("{POOL_TIMEOUT} (wait)"));
        assert!(error.is_timeout());
        assert_eq!(error.kind_label(), "unavailable");
        assert!(!RedisClientError::unavailable("connection refused").is_timeout());
    }

    #[test]
    fn a_timeout_is_unavailable_and_breaks_the_connection() {
        let error = RedisClientError::from(io(std::io::ErrorKind::TimedOut));
        assert!(error.is_timeout());
        assert!(error.is_unavailable());
        assert!(error.breaks_connection());
    }

    #[test]
    fn a_pool_wait_timeout_does_not_break_a_connection() {
        let error = RedisClientError::unavailable("no free connection");
        assert!(error.is_unavailable());
        assert!(!error.breaks_connection());
    }
}
