//! Protecting session data at rest and in transit: a key ring, the sealed
//! form of a value, a store that seals, and signed cookies. The README's
//! "Protecting session data" gives the threat model.

mod cookie_tag;
mod envelope;
mod key_ring;
mod sealed_store;

pub(crate) use self::cookie_tag::{sign as sign_cookie, verify as verify_cookie};
pub(crate) use self::envelope::{is_sealed, new_salt};
pub use self::key_ring::{KEY_BYTES, KeyRing, MAX_KEY_ID_CHARS};
pub(crate) use self::sealed_store::seal_if_configured;
pub use self::sealed_store::{FieldState, InspectedField, Inspection, SealedStore};
