//! Redis Cluster hash slots, and session ids chosen to share one.
//!
//! Rotating a session id (on login, against fixation) must move the data from
//! `sid_<old>` to `sid_<new>` atomically. On Redis Cluster that is possible
//! in one script only when both keys live in the same hash slot: a RENAME
//! across slots fails with CROSSSLOT (as Spring Session's does). Hash tags
//! would force every session into one slot, or change the `sid_<id>` layout
//! that Nest nodes read. So instead the new id is DRAWN to land in the old
//! id's slot: random v4 UUIDs are generated until one does. That costs 14 of
//! the 122 random bits (108 remain, far above the 64 that OWASP asks for)
//! and 16,384 candidates on average, drawn from the OS random source 256 at
//! a time and hashed with a table-driven CRC16. (Its CPU cost belongs in the
//! benchmark, not here; it is paid once per login, not per request.)

use uuid::{Builder, Uuid};

use crate::SessionId;

/// Redis Cluster has 16384 hash slots.
pub const SLOT_COUNT: u16 = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis uses,
/// one table entry per byte value.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0_u16; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = (byte as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
};

fn crc16(mut crc: u16, bytes: &[u8]) -> u16 {
    for &byte in bytes {
        crc = (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ byte)];
    }
    crc
}

/// The hash tag of a key: the bytes between the first `{` and the first `}`
/// after it, if there are any; else `None` (the whole key is hashed).
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The Redis Cluster hash slot of `key`, exactly as `CLUSTER KEYSLOT` gives it.
///
/// ```
/// assert_eq!(session::slot::key_slot(b"foo"), 12182);
/// assert_eq!(session::slot::key_slot(b"{user1000}.following"), session::slot::key_slot(b"user1000"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(0, hash_tag(key).unwrap_or(key)) % SLOT_COUNT
}

/// Candidates drawn per call to the OS random source.
const BATCH: usize = 256;

/// A fresh random session id whose key `{key_prefix}{id}` has the same hash
/// slot as `{key_prefix}{old}`. See the module docs for why.
///
/// # Errors
///
/// If the OS random source fails.
pub fn generate_in_same_slot(
    key_prefix: &str,
    old: &SessionId,
) -> Result<SessionId, getrandom::Error> {
    let target = key_slot(format!("{key_prefix}{}", old.as_str()).as_bytes());
    let mut randomness = [0_u8; 16 * BATCH];
    let mut key = Vec::with_capacity(key_prefix.len() + 36);
    key.extend_from_slice(key_prefix.as_bytes());
    loop {
        getrandom::fill(&mut randomness)?;
        for chunk in randomness.chunks_exact(16) {
            let mut bytes = [0_u8; 16];
            bytes.copy_from_slice(chunk);
            let uuid: Uuid = Builder::from_random_bytes(bytes).into_uuid();
            let mut text = [0_u8; 36];
            let id = uuid.hyphenated().encode_lower(&mut text);
            key.truncate(key_prefix.len());
            key.extend_from_slice(id.as_bytes());
            if key_slot(&key) == target
                && let Some(new) = SessionId::parse(id)
                && new != *old
            {
                return Ok(new);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_examples_in_the_redis_cluster_spec() {
        // CRC16("123456789") = 0x31C3 is the XMODEM check value.
        assert_eq!(crc16(0, b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
    }

    #[test]
    fn hash_tags_follow_the_spec_edge_cases() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        // An empty first tag means the whole key is hashed.
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    #[test]
    fn a_rotated_id_shares_the_old_ids_slot_and_is_new() {
        for _ in 0..5 {
            let old = SessionId::generate();
            let new = generate_in_same_slot("sid_", &old).expect("randomness");
            assert_ne!(new, old);
            assert_eq!(
                key_slot(format!("sid_{}", new.as_str()).as_bytes()),
                key_slot(format!("sid_{}", old.as_str()).as_bytes())
            );
        }
    }

    #[test]
    fn with_a_hash_tag_in_the_prefix_any_id_will_do() {
        let old = SessionId::generate();
        let new = generate_in_same_slot("{sessions}sid_", &old).expect("randomness");
        assert_ne!(new, old);
    }
}
