//! [`KeyRing`]: named 256-bit keys, the first of which is current.
//!
//! The same form serves the encryption keys (`session.encryption.keys`) and
//! the cookie signing keys (`session.cookie_signing_keys`): a list of
//! `"<key-id>:<base64 of 32 random bytes>"`, newest first. The first key
//! seals or signs; every key listed opens or verifies. So a rotation is:
//! put a new key first and deploy; drop the old one once nothing it sealed
//! can still be alive (see the README, "Protecting session data").
//!
//! Key bytes never leave this file except into a cipher or a MAC: `Debug`
//! shows the ids only, errors name the entry and its id (never its bytes),
//! and the bytes are wiped when the ring is dropped.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use zeroize::Zeroizing;

use crate::ConfigError;

/// Bytes in every key: 256 bits.
pub const KEY_BYTES: usize = 32;

/// The longest key id.
pub const MAX_KEY_ID_CHARS: usize = 16;

/// Standard base64 (RFC 4648 §4), padded or not: what `openssl rand
/// -base64 32` and `head -c32 /dev/urandom | base64` print.
const STANDARD_EITHER_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One named key.
pub(crate) struct Key {
    id: String,
    bytes: Zeroizing<[u8; KEY_BYTES]>,
}

impl Key {
    /// The key's id, as the settings name it: safe to log and to store.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// The key's bytes, for a cipher or a MAC only.
    pub(crate) fn bytes(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }
}

/// Keys by id, the first one current. Never empty: an empty list is "no
/// keys", which callers hold as `Option<KeyRing>`.
pub struct KeyRing {
    keys: Vec<Key>,
}

/// Equal rings hold the same ids and bytes in the same order (settings
/// compare; nothing on a request path does).
impl PartialEq for KeyRing {
    fn eq(&self, other: &Self) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|(a, b)| a.id == b.id && *a.bytes == *b.bytes)
    }
}

impl Eq for KeyRing {}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Parses `entries` (`"<key-id>:<base64>"` each, newest first), for the
    /// settings key `setting`. `None` for an empty list.
    ///
    /// ```
    /// use session::KeyRing;
    /// let k1 = format!("k1:{}", "A".repeat(43)); // 32 zero bytes, unpadded
    /// let ring = KeyRing::parse("session.encryption.keys", &[k1]).unwrap().unwrap();
    /// assert_eq!(ring.ids(), ["k1"]);
    /// let error = KeyRing::parse("session.encryption.keys", &["k1:c2hvcnQ=".to_owned()]).unwrap_err();
    /// assert_eq!(error.to_string(),
    ///     "session.encryption.keys key \"k1\" must be 32 bytes of base64, got 5 bytes");
    /// ```
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `setting` and the entry's key id (never the
    /// key): an entry with no `:`, an id that is not 1 to 16 characters of
    /// `[A-Za-z0-9_-]`, a key that is not base64 or not 32 bytes, or an id
    /// listed twice.
    pub fn parse(setting: &'static str, entries: &[String]) -> Result<Option<Self>, ConfigError> {
        let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
        for (at, entry) in entries.iter().enumerate() {
            let entry = entry.trim();
            let Some((id, encoded)) = entry.split_once(':').map(|(id, key)| (id.trim(), key))
            else {
                // The entry may be a bare key: do not print it.
                return Err(ConfigError::new(
                    setting,
                    format!("entry {} must be \"<key-id>:<base64 key>\"", at + 1),
                ));
            };
            if !is_key_id(id) {
                return Err(ConfigError::new(
                    setting,
                    format!(
                        "entry {}: a key id is 1 to {MAX_KEY_ID_CHARS} characters of A-Z a-z 0-9 _ -",
                        at + 1
                    ),
                ));
            }
            let decoded = Zeroizing::new(STANDARD_EITHER_PADDING.decode(encoded.trim()).map_err(
                |_| ConfigError::new(setting, format!("key {id:?} is not standard base64")),
            )?);
            let Ok(bytes) = <[u8; KEY_BYTES]>::try_from(decoded.as_slice()) else {
                return Err(ConfigError::new(
                    setting,
                    format!(
                        "key {id:?} must be {KEY_BYTES} bytes of base64, got {} bytes",
                        decoded.len()
                    ),
                ));
            };
            if keys.iter().any(|key| key.id == id) {
                return Err(ConfigError::new(
                    setting,
                    format!("key id {id:?} is listed twice"),
                ));
            }
            keys.push(Key {
                id: id.to_owned(),
                bytes: Zeroizing::new(bytes),
            });
        }
        Ok((!keys.is_empty()).then_some(Self { keys }))
    }

    /// The entries of a keys file: one key a line, newest first; blank
    /// lines and lines starting with `#` are skipped.
    pub fn entries_of_file(text: &str) -> Vec<String> {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
            .collect()
    }

    /// The key ids, current first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(Key::id).collect()
    }

    /// The key that seals or signs.
    pub(crate) fn current(&self) -> &Key {
        // Never empty: `parse` returns None instead.
        &self.keys[0]
    }

    /// The key named `id`, if the ring holds it.
    pub(crate) fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|key| key.id == id)
    }

    /// Every key, current first.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.keys.iter()
    }
}

/// A key id's form: 1 to 16 of `[A-Za-z0-9_-]`.
pub(crate) fn is_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_CHARS).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A ring of `(id, byte)` keys, each 32 copies of its byte: for tests.
#[cfg(test)]
pub(crate) fn test_ring(entries: &[(&str, u8)]) -> KeyRing {
    let entries: Vec<String> = entries
        .iter()
        .map(|(id, byte)| {
            format!(
                "{id}:{}",
                general_purpose::STANDARD.encode([*byte; KEY_BYTES])
            )
        })
        .collect();
    KeyRing::parse("session.encryption.keys", &entries)
        .expect("valid")
        .expect("not empty")
}

/// Unpadded base64url, the text form of sealed values, salts and tags.
pub(crate) const URL_SAFE: GeneralPurpose = general_purpose::URL_SAFE_NO_PAD;

#[cfg(test)]
mod tests {
    use super::*;

    const SETTING: &str = "session.encryption.keys";

    fn key_of(byte: u8) -> String {
        general_purpose::STANDARD.encode([byte; KEY_BYTES])
    }

    #[test]
    fn the_first_key_is_current_and_every_key_is_found_by_id() {
        let ring = KeyRing::parse(
            SETTING,
            &[format!("k2:{}", key_of(2)), format!(" k1 : {} ", key_of(1))],
        )
        .expect("valid")
        .expect("not empty");
        assert_eq!(ring.current().id(), "k2");
        assert_eq!(ring.get("k1").expect("listed").bytes(), &[1; KEY_BYTES]);
        assert!(ring.get("k3").is_none());
        assert_eq!(ring.ids(), ["k2", "k1"]);
    }

    #[test]
    fn padding_is_optional_and_no_keys_is_none() {
        let padded = key_of(7);
        assert!(padded.ends_with('='));
        let unpadded = padded.trim_end_matches('=').to_owned();
        for encoded in [padded, unpadded] {
            let ring = KeyRing::parse(SETTING, &[format!("a-b_9:{encoded}")])
                .expect("valid")
                .expect("one key");
            assert_eq!(ring.current().bytes(), &[7; KEY_BYTES]);
        }
        assert!(KeyRing::parse(SETTING, &[]).expect("valid").is_none());
    }

    #[test]
    fn every_bad_entry_names_the_setting_and_id_and_never_the_key() {
        let secret = key_of(9);
        let short = general_purpose::STANDARD.encode([9; 16]);
        let cases = [
            (secret.clone(), "entry 1 must be"),
            (format!(":{secret}"), "entry 1: a key id"),
            (format!("{}:{secret}", "x".repeat(17)), "entry 1: a key id"),
            (format!("k.1:{secret}"), "entry 1: a key id"),
            (
                format!("k1:{short}"),
                "key \"k1\" must be 32 bytes of base64, got 16 bytes",
            ),
            (
                "k1:not base64!".to_owned(),
                "key \"k1\" is not standard base64",
            ),
            // base64url is not the standard alphabet.
            (
                format!("k1:{}", key_of(0xfb).replace('+', "-").replace('/', "_")),
                "standard base64",
            ),
        ];
        for (entry, expected) in cases {
            let error = KeyRing::parse(SETTING, std::slice::from_ref(&entry)).expect_err(&entry);
            let text = error.to_string();
            assert_eq!(error.key(), SETTING);
            assert!(text.contains(expected), "{text:?} for {entry:?}");
            assert!(!text.contains(&secret) && !text.contains(&short), "{text}");
            assert!(!text.contains('\n'));
        }
        let twice = [format!("k1:{secret}"), format!("k1:{}", key_of(1))];
        let error = KeyRing::parse(SETTING, &twice).expect_err("duplicate");
        assert_eq!(
            error.to_string(),
            "session.encryption.keys key id \"k1\" is listed twice"
        );
    }

    #[test]
    fn debug_shows_ids_and_no_key_bytes() {
        let ring = KeyRing::parse(SETTING, &[format!("k1:{}", key_of(0xAB))])
            .expect("valid")
            .expect("one key");
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1"), "{shown}");
        assert!(
            !shown.contains("171") && !shown.contains(&key_of(0xAB)),
            "{shown}"
        );
    }

    #[test]
    fn a_keys_file_has_one_key_a_line_and_may_have_comments() {
        let text = format!(
            "# rotated 2026-12-01\nk2:{}\n\n  k1:{}  \n",
            key_of(2),
            key_of(1)
        );
        let entries = KeyRing::entries_of_file(&text);
        assert_eq!(entries.len(), 2);
        let ring = KeyRing::parse(SETTING, &entries)
            .expect("valid")
            .expect("two");
        assert_eq!(ring.ids(), ["k2", "k1"]);
    }
}
