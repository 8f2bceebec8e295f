//! Redis Cluster hash slots, and session ids chosen to share one.
//!
//! Rotating a session id (on login, against fixation) must move the data from
//! `sid_<old>` to `sid_<new>` atomically. On Redis Cluster that is possible
//! in one script only when both keys live in the same hash slot: a RENAME
//! across slots fails with CROSSSLOT (as Spring Session's does). Hash tags
//! would force every session into one slot, or change the `sid_<id>` layout
//! that Nest nodes read. So instead the new id is DRAWN to land in the old
//! id's slot (see [`generate_in_same_slot`]). That costs 14 of the 122
//! random bits (108 remain, far above the 64 that OWASP asks for). Only a
//! store on Redis Cluster does it: on a single server or Sentinel, any
//! fresh id will do.

use crate::SessionId;

/// Redis Cluster has 16384 hash slots.
pub(crate) const SLOT_COUNT: u16 = 16384;

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
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    crc16(0, hash_tag(key).unwrap_or(key)) % SLOT_COUNT
}

/// A fresh random session id whose key `{key_prefix}{id}` has the same hash
/// slot as `{key_prefix}{old}`. See the module docs for why.
///
/// The search does not hash whole keys. It draws one random id, runs the
/// CRC over the prefix and the id's first 32 characters once, and then tries
/// the 65,536 values of the last four hex digits from a random starting
/// point, four table steps each. A slot takes 16,384 tries on average, and a
/// draw with no matching suffix (about 2% of them) is simply redrawn.
pub(crate) fn generate_in_same_slot(key_prefix: &str, old: &SessionId) -> SessionId {
    if hash_tag(key_prefix.as_bytes()).is_some() {
        // The prefix holds the hash tag: every key shares one slot.
        return fresh_other_than(old);
    }
    let target = key_slot(format!("{key_prefix}{}", old.as_str()).as_bytes());
    let after_prefix = crc16(0, key_prefix.as_bytes());
    // The whole key is hashed: the CRC runs on from the prefix and the head,
    // which varies per draw, so every slot is reachable and the search ends
    // (64 draws in a row without a match would take a broken random source).
    loop {
        if let Some(new) = draw_by_suffix(target, old, MAX_DRAWS, |head| crc16(after_prefix, head))
        {
            return new;
        }
    }
}

/// The search both generators share: draw a random id, then try the 65,536
/// values of its last four hex digits from a random start until the CRC16,
/// continued from `crc_before_suffix(head)` over the four digits, lands in
/// `target`.
fn draw_by_suffix(
    target: u16,
    old: &SessionId,
    draws: usize,
    crc_before_suffix: impl Fn(&[u8]) -> u16,
) -> Option<SessionId> {
    for _ in 0..draws {
        let draw = SessionId::generate();
        let text = draw.as_str().as_bytes();
        let (head, tail) = text.split_at(HEAD_LEN);
        let before_suffix = crc_before_suffix(head);
        // The drawn digits are random: start the enumeration there.
        let start = tail
            .iter()
            .fold(0_u16, |n, &digit| (n << 4) | hex_value(digit));
        for step in 0..=u16::MAX {
            let suffix = hex4(start.wrapping_add(step));
            if crc16(before_suffix, &suffix) % SLOT_COUNT != target {
                continue;
            }
            let mut candidate = [0_u8; 36];
            candidate[..HEAD_LEN].copy_from_slice(head);
            candidate[HEAD_LEN..].copy_from_slice(&suffix);
            if let Some(new) = SessionId::parse_bytes(&candidate)
                && new != *old
            {
                return Some(new);
            }
        }
    }
    None
}

/// The hash tag a store with hashed ids puts in a session's key on Redis
/// Cluster: the id's last four characters (all of a shorter legacy id).
/// The slot then follows from 16 of the id's 122 bits, and the key still
/// names no usable id; a renewal draws a new id whose tag lands in the same
/// slot with the cheap search below, instead of hashing a candidate per try.
pub(crate) fn id_tag(id: &SessionId) -> &str {
    let text = id.as_str();
    &text[text.len().saturating_sub(4)..]
}

/// A fresh random id whose [`id_tag`] hashes to `slot`: as
/// [`generate_in_same_slot`], the last four hex digits enumerated from a
/// random start, one CRC16 of 4 bytes per try (16,384 tries on average).
///
/// Four hex digits reach 13,152 of the 16,384 slots. A canonical `old`'s
/// own tag is among them, so the search always ends for it; for a slot no
/// tag reaches (a legacy id's), it gives up after [`MAX_DRAWS`] draws and
/// returns `None`.
pub(crate) fn generate_with_tag_in_slot(slot: u16, old: &SessionId) -> Option<SessionId> {
    // Only the tag (the last four digits) is hashed, so every draw tries the
    // same 65,536 suffixes: one draw finds the slot or proves it unreachable.
    draw_by_suffix(slot, old, 1, |_| 0)
}

/// Whether `key_prefix` holds a complete hash tag, which puts every key in
/// one slot.
pub(crate) fn has_hash_tag(key_prefix: &str) -> bool {
    hash_tag(key_prefix.as_bytes()).is_some()
}

/// Draws of a raw-id search before it draws again from the top: each tries
/// all 65,536 suffixes, and about one draw in 50 finds no match.
const MAX_DRAWS: usize = 64;

/// The characters of a canonical id before its last four hex digits.
const HEAD_LEN: usize = 32;

fn fresh_other_than(old: &SessionId) -> SessionId {
    loop {
        let new = SessionId::generate();
        if new != *old {
            return new;
        }
    }
}

/// A lower-case hex digit's value (the ids are canonical: no other input).
fn hex_value(digit: u8) -> u16 {
    u16::from(match digit {
        b'0'..=b'9' => digit - b'0',
        _ => digit - b'a' + 10,
    })
}

/// `n` as four lower-case hex digits.
fn hex4(n: u16) -> [u8; 4] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [
        DIGITS[usize::from(n >> 12)],
        DIGITS[usize::from((n >> 8) & 0xf)],
        DIGITS[usize::from((n >> 4) & 0xf)],
        DIGITS[usize::from(n & 0xf)],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tagged_hashed_key_lands_in_the_slot_its_renewal_was_drawn_for() {
        let old = SessionId::generate();
        let old_key = format!("sid_{}", old.hashed(Some(id_tag(&old))).as_str());
        let slot = key_slot(old_key.as_bytes());
        assert_eq!(slot, crc16(0, id_tag(&old).as_bytes()) % SLOT_COUNT);
        let new = generate_with_tag_in_slot(slot, &old).expect("an id's own tag is reachable");
        let new_key = format!("sid_{}", new.hashed(Some(id_tag(&new))).as_str());
        assert_eq!(key_slot(new_key.as_bytes()), slot);
        assert_ne!(new, old);
        let legacy = SessionId::parse_legacy(b"k3j").expect("legacy");
        assert_eq!(id_tag(&legacy), "k3j");
        // A slot no 4-hex-digit tag reaches: the search gives up.
        let reachable: std::collections::HashSet<u16> = (0..=u16::MAX)
            .map(|n| crc16(0, &hex4(n)) % SLOT_COUNT)
            .collect();
        assert_eq!(reachable.len(), 13_152);
        let unreachable = (0..SLOT_COUNT)
            .find(|slot| !reachable.contains(slot))
            .expect("one");
        assert_eq!(generate_with_tag_in_slot(unreachable, &old), None);
    }

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
            let new = generate_in_same_slot("sid_", &old);
            assert_ne!(new, old);
            assert_eq!(
                key_slot(format!("sid_{}", new.as_str()).as_bytes()),
                key_slot(format!("sid_{}", old.as_str()).as_bytes())
            );
        }
    }

    #[test]
    fn the_enumerated_suffix_digits_round_trip() {
        for n in [0_u16, 1, 0xabcd, u16::MAX] {
            let digits = hex4(n);
            let back = digits.iter().fold(0_u16, |v, &d| (v << 4) | hex_value(d));
            assert_eq!(back, n);
        }
    }

    #[test]
    fn rotated_ids_are_spread_over_their_free_digits() {
        // 200 rotations of one id: all distinct, so the search does not
        // settle on a few answers.
        let old = SessionId::generate();
        let ids: std::collections::HashSet<_> = (0..200)
            .map(|_| generate_in_same_slot("sid_", &old))
            .collect();
        assert_eq!(ids.len(), 200);
    }

    #[test]
    fn with_a_hash_tag_in_the_prefix_any_id_will_do() {
        let old = SessionId::generate();
        let new = generate_in_same_slot("{sessions}sid_", &old);
        assert_ne!(new, old);
    }

    // Against a real server: our slots are Redis's own `CLUSTER KEYSLOT`.
    use testkit::{RedisServer, redis};

    fn redis_slot(connection: &mut redis::Connection, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(connection)
            .expect("CLUSTER KEYSLOT")
    }

    #[test]
    fn key_slot_agrees_with_cluster_keyslot() {
        // A single cluster-enabled node answers CLUSTER KEYSLOT with no slots assigned.
        let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
        let mut connection = server.connection();
        let mut keys: Vec<String> = (0..300)
            .map(|_| format!("sid_{}", SessionId::generate().as_str()))
            .collect();
        keys.extend(
            [
                "",
                "{",
                "}",
                "{}",
                "a{b}c",
                "a{}b{c}",
                "{{x}}",
                "{x}{y}",
                "日本{語}",
                "sid_",
                "{sessions}sid_1",
            ]
            .map(str::to_owned),
        );

        for key in &keys {
            assert_eq!(
                key_slot(key.as_bytes()),
                redis_slot(&mut connection, key),
                "key {key:?}"
            );
        }
    }

    #[test]
    fn a_rotated_id_lands_in_the_old_ids_slot_by_redis_reckoning() {
        let server = RedisServer::start_with(&["--cluster-enabled", "yes"]);
        let mut connection = server.connection();

        for _ in 0..5 {
            let old = SessionId::generate();
            let new = generate_in_same_slot("sid_", &old);
            assert_ne!(new, old);
            assert_eq!(
                redis_slot(&mut connection, &format!("sid_{}", new.as_str())),
                redis_slot(&mut connection, &format!("sid_{}", old.as_str()))
            );
        }
    }
}
