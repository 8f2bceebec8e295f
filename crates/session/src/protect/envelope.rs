//! The sealed form of one stored value: XChaCha20-Poly1305 under a key of
//! the ring, bound to its session and its field.
//!
//! # Format v1, byte by byte
//!
//! A sealed value is ASCII text, so that it lives in a Redis hash field like
//! any other value:
//!
//! ```text
//! stored = 0x01 "v1" ":" key-id ":" base64url( nonce || ciphertext || tag )
//! ```
//!
//! - `0x01`: marks a sealed value. No plaintext value this crate writes
//!   starts with it in practice; one that did would be taken for a broken
//!   seal (see [`is_sealed`]).
//! - `"v1"`: the format version. Anything else is refused as malformed.
//! - `key-id`: 1 to 16 of `[A-Za-z0-9_-]`, the ring's id of the key that
//!   sealed it, so that opening picks its key at once.
//! - base64url without padding (RFC 4648 §5) of the 24-byte random nonce,
//!   the ciphertext (as long as the plaintext's UTF-8) and the 16-byte
//!   Poly1305 tag.
//!
//! The associated data, authenticated but not stored with the value:
//!
//! ```text
//! aad = "session/v1" 0x00 key-id 0x00 salt 0x00 field
//! ```
//!
//! `salt` is the session's `__salt`: 16 random bytes in base64url, drawn
//! when the session is created (or first sealed) and never changed, so it
//! moves with the session through a renewal's `RENAME`. `field` is the hash
//! field's name. A value copied to another field, or to another session,
//! does not open. No part contains 0x00 but the field, which comes last, so
//! the AAD is unambiguous.
//!
//! # Why XChaCha20-Poly1305
//!
//! Its nonce is 192 bits, so random nonces never collide in practice
//! however many values one key seals (AES-GCM's 96-bit random nonces allow
//! about 2^32 seals per key before the collision risk matters; a busy site
//! reaches that). RustCrypto's implementation is pure Rust, constant-time,
//! and was audited by NCC Group; it adds no C and no build tooling.
//!
//! `tests/vectors/envelope-v1.json` holds fixed vectors (key, nonce, salt,
//! field, AAD, plaintext, stored) for another language to check against.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::key_ring::{Key, KeyRing, URL_SAFE, is_key_id};

/// The first character of every sealed value.
pub(crate) const SEALED_MARK: char = '\u{1}';
/// The format version, after the mark.
const VERSION: &str = "v1";
/// The AAD's constant head.
const AAD_HEAD: &[u8] = b"session/v1";
const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;
/// Random bytes in a session's salt.
const SALT_BYTES: usize = 16;

/// Why a stored value did not open: the `reason` label of
/// `session_decrypt_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not a v1 seal: a wrong version, a broken layout, bad base64, too
    /// short to hold a nonce and a tag.
    Malformed,
    /// Sealed under a key id the ring does not hold (removed too early, or
    /// a node whose ring is behind).
    UnknownKey,
    /// The tag does not verify: changed bytes, another field's or another
    /// session's value, or a forged key id.
    Tampered,
}

impl OpenError {
    /// The metric label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::Tampered => "tampered",
        }
    }
}

/// Whether `stored` claims to be sealed. A claim that does not open is an
/// error, never plaintext.
pub(crate) fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED_MARK)
}

/// The key id a sealed value names, if its head is well formed.
pub(crate) fn key_id_of(stored: &str) -> Option<&str> {
    let rest = stored
        .strip_prefix(SEALED_MARK)?
        .strip_prefix(VERSION)?
        .strip_prefix(':')?;
    let (key_id, _) = rest.split_once(':')?;
    is_key_id(key_id).then_some(key_id)
}

/// Whether `salt` has a salt's form: 16 bytes in unpadded base64url (22
/// characters of `[A-Za-z0-9_-]`).
pub(crate) fn is_salt(salt: &str) -> bool {
    salt.len() == 22
        && salt
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh session salt: 16 bytes from the OS random source (through the
/// ids' per-thread buffer), base64url.
pub(crate) fn new_salt() -> String {
    URL_SAFE.encode(crate::id::random_bytes::<SALT_BYTES>())
}

/// Seals `plaintext` as field `field` of the session salted `salt`, under
/// the ring's current key and a fresh random nonce (24 bytes from the OS
/// random source, through the ids' per-thread buffer).
pub(crate) fn seal(ring: &KeyRing, salt: &str, field: &str, plaintext: &str) -> String {
    let nonce = crate::id::random_bytes::<NONCE_BYTES>();
    seal_with_nonce(ring.current(), &nonce, salt, field, plaintext)
}

/// [`seal`] with a given nonce: for the fixed test vectors only. A nonce
/// must never be used twice under one key.
pub(crate) fn seal_with_nonce(
    key: &Key,
    nonce: &[u8; NONCE_BYTES],
    salt: &str,
    field: &str,
    plaintext: &str,
) -> String {
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let aad = associated_data(key.id(), salt, field);
    let payload = Payload {
        msg: plaintext.as_bytes(),
        aad: &aad,
    };
    // Encryption fails only for a message past 2^38 bytes; a session value
    // is at most 1 MiB (`session.max_bytes`).
    let sealed = cipher
        .encrypt(XNonce::from_slice(nonce), payload)
        .unwrap_or_else(|_| unreachable!("XChaCha20-Poly1305 seals any value under 256 GiB"));
    let mut body = Vec::with_capacity(NONCE_BYTES + sealed.len());
    body.extend_from_slice(nonce);
    body.extend_from_slice(&sealed);
    let mut stored = String::with_capacity(5 + key.id().len() + body.len() * 4 / 3 + 4);
    stored.push(SEALED_MARK);
    stored.push_str(VERSION);
    stored.push(':');
    stored.push_str(key.id());
    stored.push(':');
    URL_SAFE.encode_string(&body, &mut stored);
    stored
}

/// Opens `stored`, field `field` of the session salted `salt`.
pub(crate) fn open(
    ring: &KeyRing,
    salt: &str,
    field: &str,
    stored: &str,
) -> Result<String, OpenError> {
    let rest = stored
        .strip_prefix(SEALED_MARK)
        .and_then(|rest| rest.strip_prefix(VERSION))
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or(OpenError::Malformed)?;
    let (key_id, body) = rest.split_once(':').ok_or(OpenError::Malformed)?;
    if !is_key_id(key_id) {
        return Err(OpenError::Malformed);
    }
    let body = URL_SAFE.decode(body).map_err(|_| OpenError::Malformed)?;
    if body.len() < NONCE_BYTES + TAG_BYTES {
        return Err(OpenError::Malformed);
    }
    let key = ring.get(key_id).ok_or(OpenError::UnknownKey)?;
    let (nonce, sealed) = body.split_at(NONCE_BYTES);
    let cipher = XChaCha20Poly1305::new(key.bytes().into());
    let aad = associated_data(key_id, salt, field);
    let plaintext = cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: sealed,
                aad: &aad,
            },
        )
        .map_err(|_| OpenError::Tampered)?;
    // Only UTF-8 is ever sealed, and the tag proves these are those bytes.
    String::from_utf8(plaintext).map_err(|_| OpenError::Malformed)
}

/// The AAD of the module docs.
fn associated_data(key_id: &str, salt: &str, field: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_HEAD.len() + key_id.len() + salt.len() + field.len() + 3);
    aad.extend_from_slice(AAD_HEAD);
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(salt.as_bytes());
    aad.push(0);
    aad.extend_from_slice(field.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(entries: &[(&str, u8)]) -> KeyRing {
        crate::protect::key_ring::test_ring(entries)
    }

    #[test]
    fn a_sealed_value_opens_under_its_session_and_field_only() {
        let keys = ring(&[("k1", 1)]);
        let salt = new_salt();
        let sealed = seal(&keys, &salt, "user", "ada");
        assert!(is_sealed(&sealed) && is_salt(&salt));
        assert!(!sealed.contains("ada"));
        assert_eq!(open(&keys, &salt, "user", &sealed), Ok("ada".to_owned()));
        assert_eq!(
            open(&keys, &salt, "role", &sealed),
            Err(OpenError::Tampered)
        );
        assert_eq!(
            open(&keys, &new_salt(), "user", &sealed),
            Err(OpenError::Tampered)
        );
        assert_ne!(
            sealed,
            seal(&keys, &salt, "user", "ada"),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn rotation_seals_with_the_first_key_and_opens_with_any() {
        let old = ring(&[("k1", 1)]);
        let both = ring(&[("k2", 2), ("k1", 1)]);
        let only_new = ring(&[("k2", 2)]);
        let salt = new_salt();
        let under_k1 = seal(&old, &salt, "f", "v");
        assert_eq!(open(&both, &salt, "f", &under_k1).as_deref(), Ok("v"));
        let under_k2 = seal(&both, &salt, "f", "v");
        assert!(under_k2.starts_with("\u{1}v1:k2:"), "{under_k2:?}");
        assert_eq!(open(&only_new, &salt, "f", &under_k2).as_deref(), Ok("v"));
        assert_eq!(
            open(&only_new, &salt, "f", &under_k1),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn a_key_id_changed_to_another_key_of_the_ring_does_not_open() {
        let both = ring(&[("k2", 2), ("k1", 1)]);
        let salt = new_salt();
        let sealed = seal(&both, &salt, "f", "v");
        let relabelled = sealed.replacen(":k2:", ":k1:", 1);
        assert_eq!(
            open(&both, &salt, "f", &relabelled),
            Err(OpenError::Tampered)
        );
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let keys = ring(&[("k1", 1)]);
        let salt = new_salt();
        let sealed = seal(&keys, &salt, "cart", "[1,2,3]");
        let bytes = sealed.as_bytes();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.to_vec();
                flipped[at] ^= 1 << bit;
                let Ok(text) = String::from_utf8(flipped) else {
                    continue; // not text: Redis would not hand it back as a string
                };
                if text == sealed {
                    continue;
                }
                assert!(
                    open(&keys, &salt, "cart", &text).is_err(),
                    "bit {bit} of byte {at} flipped and it still opened"
                );
            }
        }
        for len in 0..sealed.len() {
            assert!(
                open(&keys, &salt, "cart", &sealed[..len]).is_err(),
                "cut to {len}"
            );
        }
    }

    #[test]
    fn the_parts_fail_with_their_own_reasons() {
        let keys = ring(&[("k1", 1)]);
        let salt = new_salt();
        let sealed = seal(&keys, &salt, "f", "value");
        let version = sealed.replacen("v1", "v2", 1);
        assert_eq!(open(&keys, &salt, "f", &version), Err(OpenError::Malformed));
        let unknown = sealed.replacen(":k1:", ":k9:", 1);
        assert_eq!(
            open(&keys, &salt, "f", &unknown),
            Err(OpenError::UnknownKey)
        );
        let short = format!("\u{1}v1:k1:{}", URL_SAFE.encode([0_u8; 39]));
        assert_eq!(open(&keys, &salt, "f", &short), Err(OpenError::Malformed));
        assert_eq!(
            open(&keys, &salt, "f", "\u{1}v1:k1:***"),
            Err(OpenError::Malformed)
        );
        assert_eq!(open(&keys, &salt, "f", "plain"), Err(OpenError::Malformed));
    }
}

#[cfg(test)]
mod vectors {
    //! The published vectors (`tests/vectors/envelope-v1.json`): values
    //! frozen when format v1 was made. Every later build must open them,
    //! and seal the same inputs to the same bytes.
    use base64::engine::general_purpose::STANDARD;
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Vector {
        key_id: String,
        key_base64: String,
        nonce_hex: String,
        salt: String,
        field: String,
        plaintext: String,
        aad_hex: String,
        stored: String,
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
            .collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_published_vectors_open_and_reseal_byte_for_byte() {
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("../../tests/vectors/envelope-v1.json"))
                .expect("the vectors file parses");
        assert!(vectors.len() >= 4);
        for v in &vectors {
            let ring = KeyRing::parse(
                "session.encryption.keys",
                &[format!("{}:{}", v.key_id, v.key_base64)],
            )
            .expect("valid")
            .expect("one key");
            assert_eq!(STANDARD.decode(&v.key_base64).expect("base64").len(), 32);
            let nonce: [u8; NONCE_BYTES] = unhex(&v.nonce_hex).try_into().expect("24 bytes");
            assert_eq!(
                hex(&associated_data(&v.key_id, &v.salt, &v.field)),
                v.aad_hex
            );
            assert_eq!(
                seal_with_nonce(ring.current(), &nonce, &v.salt, &v.field, &v.plaintext),
                v.stored,
                "{}",
                v.field
            );
            assert_eq!(
                open(&ring, &v.salt, &v.field, &v.stored).as_deref(),
                Ok(v.plaintext.as_str())
            );
        }
    }
}
