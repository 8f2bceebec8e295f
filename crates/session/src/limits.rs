//! The checks' shared vocabulary: [`ConfigError`] and the largest values
//! any setting may take. A leaf: it imports nothing of the crate.

use std::time::Duration;

/// A setting that can never work, named by its key (`session.<field>` of
/// [`SessionSettings`](crate::SessionSettings)), with what it must be. Its text is one line, and it
/// never quotes a secret.
///
/// ```
/// let error = session::SessionMiddleware::builder(session::MemorySessionStore::new())
///     .touch_after_fraction(-1.0)
///     .build()
///     .unwrap_err();
/// assert_eq!(error.key(), "session.touch_after_fraction");
/// assert_eq!(error.to_string(), "session.touch_after_fraction must be between 0.0 and 1.0, got -1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {problem}")]
pub struct ConfigError {
    key: &'static str,
    problem: String,
}

impl ConfigError {
    pub(crate) fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }

    /// The settings key at fault, e.g. `session.cookie_name`.
    pub fn key(&self) -> &'static str {
        self.key
    }
}

/// The longest timeout we accept: a year. Longer is surely a typo (ms?), and
/// it keeps every TTL far inside what Redis's `PEXPIRE`, Lua's numbers and
/// `Instant` arithmetic hold.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// The largest session we accept: 1 MiB. Redis would take 512 MiB, but a
/// session that large is read on every request that uses it.
pub(crate) const MAX_SESSION_BYTES: usize = 1024 * 1024;

/// Most fields we accept in `max_fields`: a script's arguments must stay
/// well inside Lua's stack.
pub(crate) const MAX_SESSION_FIELDS: usize = 1024;

/// A duration as the settings write it: whole seconds, or a fraction.
pub(crate) fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.3}", duration.as_secs_f64())
    }
}
