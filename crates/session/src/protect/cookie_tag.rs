//! Signed cookies: `<id>.<tag>`, the tag an HMAC-SHA256 of the id under the
//! cookie signing key ring (`session.cookie_signing_keys`).
//!
//! The first key signs and every key verifies, as express-session's
//! `secret` array does, so a rotation is: put a new key first, deploy, and
//! drop the old one once the idle timeout has passed (every cookie still
//! signed by it names a session that has since expired or been re-signed:
//! each response that refreshes a cookie signs it anew).
//!
//! A cookie whose tag does not verify is a forged or stale id: the request
//! gets a fresh session without a store lookup.
//!
//! ```text
//! tag    = base64url( HMAC-SHA256( key, "session/v1 cookie" 0x00 id ) )   (43 characters)
//! cookie = id "." tag
//! ```

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::key_ring::{Key, KeyRing, URL_SAFE};

type HmacSha256 = Hmac<Sha256>;

/// What the MAC covers before the id: no tag can be replayed from another
/// use of the same key.
const DOMAIN: &[u8] = b"session/v1 cookie\0";
/// A tag's text length: 32 bytes in unpadded base64url.
const TAG_CHARS: usize = 43;

fn mac(key: &Key, id: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this never fails.
    let mut mac = HmacSha256::new_from_slice(key.bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(DOMAIN);
    mac.update(id);
    mac
}

/// The cookie value for `id`, signed by the ring's current key.
pub(crate) fn sign(ring: &KeyRing, id: &str) -> String {
    let tag = mac(ring.current(), id.as_bytes()).finalize().into_bytes();
    let mut value = String::with_capacity(id.len() + 1 + TAG_CHARS);
    value.push_str(id);
    value.push('.');
    URL_SAFE.encode_string(tag, &mut value);
    value
}

/// The id inside a signed cookie value, if its tag verifies under any key
/// of the ring (each comparison in constant time), and whether the key was
/// the current one (else the cookie should be signed anew).
pub(crate) fn verify<'a>(ring: &KeyRing, value: &'a [u8]) -> Option<(&'a [u8], bool)> {
    // The tag's length first: junk of any size is refused without a MAC.
    if value.len() <= TAG_CHARS + 1 {
        return None;
    }
    let (id, dotted_tag) = value.split_at(value.len() - TAG_CHARS - 1);
    let tag_text = dotted_tag.strip_prefix(b".")?;
    let mut tag = [0_u8; 33];
    let len = URL_SAFE.decode_slice(tag_text, &mut tag).ok()?;
    let tag = tag.get(..len).filter(|tag| tag.len() == 32)?;
    let signer = ring
        .keys()
        .position(|key| mac(key, id).verify_slice(tag).is_ok())?;
    Some((id, signer == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(entries: &[(&str, u8)]) -> KeyRing {
        crate::protect::key_ring::test_ring(entries)
    }

    const ID: &str = "0b7c2d1e-5f3a-4e8b-9c6d-2a1f0e9d8c7b";

    #[test]
    fn a_signed_id_verifies_and_yields_the_id() {
        let keys = ring(&[("c1", 1)]);
        let value = sign(&keys, ID);
        assert_eq!(value.len(), ID.len() + 1 + TAG_CHARS);
        assert_eq!(verify(&keys, value.as_bytes()), Some((ID.as_bytes(), true)));
    }

    #[test]
    fn any_change_to_id_or_tag_and_any_other_key_is_refused() {
        let keys = ring(&[("c1", 1)]);
        let value = sign(&keys, ID);
        let bytes = value.as_bytes();
        for at in 0..bytes.len() {
            let mut changed = bytes.to_vec();
            changed[at] ^= 0x01;
            assert_eq!(verify(&keys, &changed), None, "byte {at}");
        }
        assert_eq!(verify(&ring(&[("c2", 2)]), bytes), None);
        assert_eq!(verify(&keys, ID.as_bytes()), None, "a bare id");
        assert_eq!(verify(&keys, b""), None);
        assert_eq!(verify(&keys, &[b'.'; 200]), None);
    }

    #[test]
    fn the_first_key_signs_and_every_key_verifies() {
        let old = ring(&[("c1", 1)]);
        let rotated = ring(&[("c2", 2), ("c1", 1)]);
        let by_old = sign(&old, ID);
        assert_eq!(
            verify(&rotated, by_old.as_bytes()),
            Some((ID.as_bytes(), false)),
            "verified, by a key no longer current: to be signed anew"
        );
        let by_new = sign(&rotated, ID);
        assert_ne!(by_new, by_old);
        assert_eq!(
            verify(&ring(&[("c2", 2)]), by_new.as_bytes()),
            Some((ID.as_bytes(), true))
        );
    }
}
