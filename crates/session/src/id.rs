//! Session ids: 122 random bits, and a `Display` that never shows them whole.

use std::cell::RefCell;
use std::fmt;

use uuid::Builder;

/// A session id: a random (version 4) UUID in its canonical hyphenated,
/// lower-case form, for example `0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7b`.
///
/// The only ways to get one are [`SessionId::generate`], which draws 122 bits
/// from the operating system's random source, and [`SessionId::parse`], which
/// accepts exactly the canonical form. Anything else a client sends (an empty
/// value, another UUID spelling, glob characters, 10 kB of junk) is not a
/// session id, so it never reaches Redis as a key.
///
/// `Display` and `Debug` print only the first 8 characters followed by `…`,
/// enough to correlate log lines and useless for hijacking. Use
/// [`SessionId::as_str`] for the one place that needs the whole id: the cookie.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

/// OS randomness, fetched in bulk and handed out 16 bytes at a time.
struct RandomBuffer {
    bytes: [u8; 4096],
    /// Bytes already handed out (and wiped) from the front.
    used: usize,
}

impl RandomBuffer {
    fn take_16(&mut self) -> [u8; 16] {
        self.take()
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        const { assert!(N <= 4096, "at most the buffer's 4096 bytes") };
        if self.used + N > self.bytes.len() {
            getrandom::fill(&mut self.bytes)
                .unwrap_or_else(|error| panic!("the OS random source failed: {error}"));
            self.used = 0;
        }
        let mut taken = [0_u8; N];
        let slice = &mut self.bytes[self.used..self.used + N];
        taken.copy_from_slice(slice);
        // Wipe it: the buffer never holds the bytes of an id already issued.
        slice.fill(0);
        self.used += N;
        taken
    }
}

/// `N` bytes (at most 4096) from the OS random source, through the same
/// per-thread buffer as ids: a sealed value's nonce or a session's salt
/// costs no system call of its own. (A process that forks after drawing
/// would hand both halves the same buffered bytes: nothing here forks.)
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    RANDOMNESS.with_borrow_mut(RandomBuffer::take)
}

thread_local! {
    static RANDOMNESS: RefCell<RandomBuffer> = const {
        RefCell::new(RandomBuffer { bytes: [0; 4096], used: 4096 })
    };
}

/// The length of a canonical hyphenated UUID.
const CANONICAL_LEN: usize = 36;

/// The longest legacy (NestJS) id: `Math.random().toString(36).slice(2)`.
const LEGACY_MAX_LEN: usize = 16;

/// Hex digits of a SHA-256: the stored name of a hashed id, without a tag.
const HASHED_LEN: usize = 64;

impl SessionId {
    /// A new random id from the OS random source (`getrandom`), fetched
    /// 4 KiB at a time per thread: one system call per 256 ids instead of
    /// one per id (the benchmark's new-session workload counts them).
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply randomness, as
    /// `Uuid::new_v4` would: no session id is better than a guessable one.
    pub fn generate() -> Self {
        let bytes = RANDOMNESS.with_borrow_mut(RandomBuffer::take_16);
        Self(
            Builder::from_random_bytes(bytes)
                .into_uuid()
                .hyphenated()
                .to_string(),
        )
    }

    /// Accepts exactly what [`SessionId::generate`] produces: a lower-case,
    /// hyphenated, version 4 UUID. Returns `None` for anything else.
    ///
    /// ```
    /// use session::SessionId;
    /// let id = SessionId::generate();
    /// assert_eq!(SessionId::parse(id.as_str()), Some(id));
    /// assert_eq!(SessionId::parse("*"), None);
    /// assert_eq!(SessionId::parse("0B7C2D1E-5F3A-4E8B-9C6D-2A1F0E9D8C7B"), None); // not canonical
    /// ```
    pub fn parse(candidate: &str) -> Option<Self> {
        Self::parse_bytes(candidate.as_bytes())
    }

    /// [`SessionId::parse`] on the raw bytes of a cookie value.
    ///
    /// It checks the canonical form byte by byte: hyphens at 8, 13, 18 and
    /// 23, the version digit `4` at 14, lower-case hex everywhere else.
    /// Every request with a cookie runs this, so it skips UTF-8 validation
    /// and a general UUID parser; a unit test checks it against `uuid`'s.
    pub(crate) fn parse_bytes(candidate: &[u8]) -> Option<Self> {
        // The length first: a 10 kB cookie is rejected without a scan.
        if candidate.len() != CANONICAL_LEN {
            return None;
        }
        let canonical = candidate.iter().enumerate().all(|(at, &byte)| match at {
            8 | 13 | 18 | 23 => byte == b'-',
            14 => byte == b'4',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte),
        });
        if !canonical {
            return None;
        }
        // All ASCII by now, so this never fails.
        std::str::from_utf8(candidate)
            .ok()
            .map(|text| Self(text.to_owned()))
    }

    /// The whole id, for the cookie and the store key. Never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 8 characters: what logs show (of a weak legacy id, a
    /// quarter of it).
    pub fn short(&self) -> &str {
        let shown = if self.is_legacy() {
            self.0.len() / 4
        } else {
            8
        };
        &self.0[..shown]
    }

    /// The NestJS design's id form, for `session.legacy_ids`: 1 to 16 of
    /// `[0-9a-z]`, as `Math.random().toString(36).slice(2)` draws them.
    /// Such an id is weak: the session layer only ever renews it away.
    pub(crate) fn parse_legacy(candidate: &[u8]) -> Option<Self> {
        let legacy = (1..=LEGACY_MAX_LEN).contains(&candidate.len())
            && candidate
                .iter()
                .all(|&b| b.is_ascii_digit() || b.is_ascii_lowercase());
        // All ASCII by now, so this never fails.
        legacy
            .then(|| std::str::from_utf8(candidate).ok())
            .flatten()
            .map(|text| Self(text.to_owned()))
    }

    /// True for an id of the legacy (NestJS) form, which this crate never
    /// draws: see [`SessionId::parse_legacy`].
    pub(crate) fn is_legacy(&self) -> bool {
        self.0.len() <= LEGACY_MAX_LEN
    }

    /// The name a store with hashed ids keeps session `self` under: 64 hex
    /// digits of SHA-256(id), after `{tag}` when `tag` is given (see
    /// `RedisSessionStore::with_hashed_ids`). Such an id addresses the
    /// session in the store but is never a cookie.
    pub(crate) fn hashed(&self, tag: Option<&str>) -> Self {
        use sha2::{Digest, Sha256};
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(self.0.as_bytes());
        let mut text = String::with_capacity(HASHED_LEN + 6);
        if let Some(tag) = tag {
            text.push('{');
            text.push_str(tag);
            text.push('}');
        }
        for byte in digest {
            text.push(char::from(DIGITS[usize::from(byte >> 4)]));
            text.push(char::from(DIGITS[usize::from(byte & 15)]));
        }
        Self(text)
    }

    /// A stored hashed name as [`SessionId::hashed`] makes it, read back
    /// from a user index: 64 lower-case hex digits, after `{1 to 4 of
    /// [0-9a-z]}` or not.
    pub(crate) fn parse_hashed(text: &str) -> Option<Self> {
        let digest = match text.strip_prefix('{') {
            Some(rest) => {
                let (tag, digest) = rest.split_once('}')?;
                let tag_ok = (1..=4).contains(&tag.len())
                    && tag
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
                tag_ok.then_some(digest)?
            }
            None => text,
        };
        let ok = digest.len() == HASHED_LEN
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(text.to_owned()))
    }

    /// True for a stored hashed name (see [`SessionId::hashed`]).
    pub(crate) fn is_hashed(&self) -> bool {
        self.0.len() >= HASHED_LEN
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}…", self.short())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({}…)", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn generated_ids_are_canonical_v4_uuids() {
        let id = SessionId::generate();
        assert_eq!(id.as_str().len(), 36);
        let uuid = Uuid::parse_str(id.as_str()).expect("a uuid");
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(SessionId::parse(id.as_str()).as_ref(), Some(&id));
    }

    #[test]
    fn the_random_buffer_wipes_what_it_hands_out_and_refills() {
        let mut buffer = RandomBuffer {
            bytes: [0; 4096],
            used: 4096,
        };
        let first = buffer.take_16();
        assert_eq!(buffer.used, 16, "refilled, then 16 taken");
        assert!(buffer.bytes[..16].iter().all(|&b| b == 0), "wiped");
        assert_ne!(first, [0; 16]);
        assert_ne!(buffer.take_16(), first);
    }

    #[test]
    fn generated_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> = (0..10_000)
            .map(|_| SessionId::generate().as_str().to_owned())
            .collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn malformed_candidates_are_rejected() {
        let too_long = "a".repeat(10_000);
        for candidate in [
            "",
            "*",
            "sid_*",
            "[a-z]?",
            too_long.as_str(),
            "0b7c2d1e5f3a4e8b9c6d2a1f0e9d8c7b", // simple form
            "{0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7b}", // braced
            "0B7C2D1E-5F3A-4E8B-9C6D-2A1F0E9D8C7B", // upper case
            "0b7c2d1e-5f3a-1e8b-9c6d-2a1f0e9d8c7b", // version 1
            "0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7*", // glob in a uuid shape
            "0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7é", // multi-byte
        ] {
            assert_eq!(
                SessionId::parse(candidate),
                None,
                "{candidate:?} must be rejected"
            );
        }
    }

    /// The definition `parse_bytes` implements by hand: what `uuid` parses
    /// as a hyphenated version 4 UUID, with no upper-case letter.
    fn canonical_by_uuid(candidate: &str) -> bool {
        candidate.len() == CANONICAL_LEN
            && Uuid::try_parse(candidate).is_ok_and(|uuid| uuid.get_version_num() == 4)
            && !candidate.bytes().any(|b| b.is_ascii_uppercase())
    }

    #[test]
    fn parse_agrees_with_the_uuid_parser_on_every_single_byte_change() {
        // Every position of a valid id, replaced by every byte value: 36 x 256
        // candidates, most invalid (and some not UTF-8 at all).
        let id = SessionId::generate();
        let mut checked = 0;
        for at in 0..CANONICAL_LEN {
            for byte in 0..=u8::MAX {
                let mut candidate = id.as_str().as_bytes().to_vec();
                candidate[at] = byte;
                let by_hand = SessionId::parse_bytes(&candidate).is_some();
                let by_uuid = std::str::from_utf8(&candidate).is_ok_and(canonical_by_uuid);
                assert_eq!(by_hand, by_uuid, "position {at}, byte {byte:#04x}");
                checked += 1;
            }
        }
        assert_eq!(checked, 36 * 256);
    }

    #[test]
    fn only_the_nest_form_parses_as_a_legacy_id() {
        for good in ["a", "0", "k3j9x2m1q8z7", "0123456789abcdef"] {
            let id = SessionId::parse_legacy(good.as_bytes()).expect(good);
            assert!(id.is_legacy());
            assert!(good.starts_with(id.short()) && id.short().len() <= good.len() / 4);
        }
        for bad in ["", "0123456789abcdefg", "ABC", "a-b", "a b", "*", "é"] {
            assert_eq!(SessionId::parse_legacy(bad.as_bytes()), None, "{bad:?}");
        }
        assert!(!SessionId::generate().is_legacy());
    }

    #[test]
    fn a_hashed_id_is_sha256_hex_with_or_without_a_tag_and_reads_back() {
        let id = SessionId::parse("0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7b").expect("canonical");
        let hashed = id.hashed(None);
        // python3 -c 'import hashlib;print(hashlib.sha256(b"0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7b").hexdigest())'
        assert_eq!(
            hashed.as_str(),
            "1bb0aea0f3427a3e820b502852878b0b3ce1f40338804987fdbbc988a9c033df"
        );
        assert!(hashed.is_hashed() && !id.is_hashed() && !hashed.is_legacy());
        let tagged = id.hashed(Some("8c7b"));
        assert_eq!(&tagged.as_str()[..6], "{8c7b}");
        for stored in [&hashed, &tagged] {
            assert_eq!(
                SessionId::parse_hashed(stored.as_str()).as_ref(),
                Some(stored)
            );
        }
        for bad in [
            "",
            "{}",
            "{abcde}00",
            &"A".repeat(64),
            &"0".repeat(63),
            id.as_str(),
        ] {
            assert_eq!(SessionId::parse_hashed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn display_and_debug_show_only_a_prefix() {
        let id = SessionId::generate();
        let shown = format!("{id} {id:?}");
        assert!(!shown.contains(id.as_str()), "{shown}");
        assert!(shown.contains(&id.as_str()[..8]), "{shown}");
    }
}
