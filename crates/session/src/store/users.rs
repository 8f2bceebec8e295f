//! The user index: which sessions a signed-in user has, for "where you're
//! signed in", "sign out everywhere" and a password change.
//!
//! Each user has ONE index, kept apart from the sessions (on Redis Cluster a
//! session's key and its user's index live in different slots, so no script
//! touches both). An entry maps an opaque [`SessionHandle`] to the session's
//! id and its creation time; the session in turn records its user and
//! handle in its own metadata (`__user`, `__handle`). Entries are pruned
//! when the index is touched (an entry dies no later than its session's
//! absolute deadline), the index itself expires with its newest entry
//! (two minutes later at least once the epoch was raised), and a user has
//! at most `session.max_sessions_per_user` entries.
//!
//! # Why a sign-in cannot outlive "sign out everywhere"
//!
//! Every user has an **epoch**. A sign-in reads it first (before the
//! credentials are checked), and its entry joins the index only if the
//! epoch is still the same, in one atomic step. "Sign out everywhere" raises
//! the epoch, THEN reads the entries and ends their sessions. So a sign-in
//! either joined before the raise (its entry is read and its session ended)
//! or finds the epoch moved (it deletes its own new session and fails). A
//! sign-in that dies between writing its session and joining leaves a
//! session whose id was never sent to anyone. A ticket lives a minute at
//! most, and a raised epoch ten ([`super::USER_INDEX_KEEP`]), so no
//! sign-in can find the epoch expired and back at 0.
//!
//! # Why a renewal cannot outlive a revocation
//!
//! A renewal of a signed-in session keeps its handle: it renames the
//! session, then moves the entry to the new id (`rejoin`), only if the
//! entry still names the old id and is not marked as being ended. Every
//! revocation marks the entries it reads (`x:<handle>`, in the same step:
//! "sign out everywhere", a revocation by handle with `take`, a join past
//! the cap), then ends their sessions, then drops them; a logout marks its
//! own entry before it deletes. So a renewal either moved the entry before
//! the mark (the revocation reads the new id and ends it) or finds it
//! marked (it deletes its new session). Only marked entries are ever
//! dropped, so no caller that read an entry earlier can drop one a renewal
//! has since moved. Left open: a logout that first reads its session after
//! a renewal renamed it cannot find the entry (README, "What is still
//! open").

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::SessionId;

/// An opaque name for one of a user's sessions: 32 random hex digits. Safe
/// to show to the page and to log; it reveals nothing about the session id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionHandle(String);

impl SessionHandle {
    /// A fresh random handle, from the OS random source.
    pub fn generate() -> Self {
        let mut bytes = [0_u8; 16];
        getrandom::fill(&mut bytes)
            .unwrap_or_else(|error| panic!("the OS random source failed: {error}"));
        Self(hex(&bytes))
    }

    /// `text` if it is a handle's form (32 lower-case hex digits), else
    /// `None`: nothing else reaches the store.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(text.to_owned()))
    }

    /// The handle's text, for a page or a URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionHandle({})", self.0)
    }
}

/// One entry of a user's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// What the user sees.
    pub handle: SessionHandle,
    /// What it ends: the session's id, or for a store that hashes ids the
    /// hashed name it keeps (it addresses the session in `load` and
    /// `delete`, and is never a cookie).
    pub id: SessionId,
    /// When the session was created: its absolute deadline counts from it.
    pub created: SystemTime,
}

/// The longest user id accepted, in bytes.
pub const MAX_USER_ID_BYTES: usize = 256;

/// Whether `user` can be a user id: 1 to [`MAX_USER_ID_BYTES`] bytes, no
/// control characters. Anything else never reaches a store.
pub(crate) fn is_valid_user_id(user: &str) -> bool {
    !user.is_empty() && user.len() <= MAX_USER_ID_BYTES && !user.chars().any(char::is_control)
}

/// The hash tag of `user`'s index keys: 32 hex digits of SHA-256(user).
/// Hex has no braces, so no user id (`{`, `}` included) can break the tag,
/// and the keys name no user.
pub(crate) fn user_tag(user: &str) -> String {
    let digest = Sha256::digest(user.as_bytes());
    hex(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_32_hex_digits_and_nothing_else_parses() {
        let handle = SessionHandle::generate();
        assert_eq!(SessionHandle::parse(handle.as_str()), Some(handle.clone()));
        assert_ne!(handle, SessionHandle::generate());
        for bad in [
            "",
            "0",
            &"g".repeat(32),
            &"A".repeat(32),
            &"a".repeat(33),
            "*",
        ] {
            assert_eq!(SessionHandle::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_user_tag_is_hex_whatever_the_user_id_holds() {
        let tag = user_tag("{ada}:}{");
        assert_eq!(tag.len(), 32);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(tag, user_tag("{ada}:}{"), "stable");
        assert_ne!(tag, user_tag("ada"));
        // SHA-256("ada"), its first 16 bytes (python3 hashlib agrees).
        assert_eq!(user_tag("ada"), "fdee430d40bd57deeac186cd9790033d");
    }

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert!(is_valid_user_id("ada"));
        assert!(is_valid_user_id("{braces}"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("a\nb"));
        assert!(!is_valid_user_id(&"a".repeat(MAX_USER_ID_BYTES + 1)));
    }
}
