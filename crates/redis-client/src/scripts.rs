//! The Lua scripts, each loaded once per process and called with EVALSHA.
//!
//! A script is how one round trip can both check and write: Redis runs it
//! atomically, so no other client's command lands between its lines. The
//! sources live beside this file as `.lua`, commented line by line.

use std::sync::LazyLock;

use deadpool_redis::redis::Script;

/// Sets fields + TTL, only if the hash is absent ("create") or present ("update").
pub(crate) static HASH_WRITE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/hash_write.lua")));

/// Adds to an integer field and refreshes the TTL, only if the hash exists.
pub(crate) static HASH_INCR_IF_EXISTS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/hash_incr_if_exists.lua")));

/// Every script, for loading them all at start-up.
pub(crate) fn all() -> [&'static Script; 2] {
    [&HASH_WRITE, &HASH_INCR_IF_EXISTS]
}
