//! The names of the metrics this crate records, through the `metrics` facade.

/// Counter: sessions read from the store (one per request that reads).
pub const LOADS_TOTAL: &str = "session_loads_total";

/// Counter, label `op` (`create`, `update`, `touch`, `renew`, `purge`): the
/// writes the middleware makes after handlers.
pub const COMMITS_TOTAL: &str = "session_commits_total";

/// Counter: new sessions written, by a commit or by `incr` /
/// `compare_and_set` on a request without one.
pub const CREATIONS_TOTAL: &str = "session_creations_total";

/// Counter: new sessions a request would have created and the
/// [`NewSessionGate`](crate::NewSessionGate) refused (429, nothing written).
pub const NEW_SESSIONS_REFUSED_TOTAL: &str = "session_new_sessions_refused_total";

/// Counter: sessions moved to a new id by `renew`.
pub const RENEWALS_TOTAL: &str = "session_renewals_total";

/// Counter: sessions deleted by `purge`.
pub const PURGES_TOTAL: &str = "session_purges_total";

/// Counter: commits that failed and replaced the handler's response.
pub const COMMIT_FAILURES_TOTAL: &str = "session_commit_failures_total";

/// Counter, label `reason` (`tampered`, `unknown_key`, `malformed`,
/// `plaintext`): loaded sessions that held a value that would not decrypt,
/// and so counted as gone. `plaintext` is a plain value while
/// `session.encryption.accept_plaintext` is off.
pub const DECRYPT_FAILURES_TOTAL: &str = "session_decrypt_failures_total";
