//! [`SessionError`]: what the session layer reports to the app.

use crate::StoreError;
use crate::codec::CodecError;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed; see [`StoreError`]. Unavailability passes by itself.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The value given to [`crate::SessionService::set_session`] cannot be a
    /// session: not a struct or map, or with no fields at all.
    #[error("the value cannot be stored as a session")]
    Encode(#[source] CodecError),

    /// The stored session does not have the shape asked for: a missing field,
    /// or a field that does not parse as its type.
    #[error("the stored session does not match the requested type")]
    Decode(#[source] CodecError),

    /// Fresh ids kept colliding with existing sessions. With 122 random bits
    /// this means the random source is broken; it is never a normal outcome.
    #[error("could not find an unused session id")]
    IdsExhausted,
}

impl SessionError {
    /// True when the store could not be reached: answer 503 and retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(error) if error.is_unavailable())
    }
}
