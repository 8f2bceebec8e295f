//! Reading the session id from a request, and the `Set-Cookie` that carries it.

use actix_web::cookie::{Cookie, SameSite, time};
use actix_web::http::header::{self, HeaderMap};

use crate::{CookieMode, SessionId, SessionSettings};

/// The session id a request names, if it names exactly one well-formed id.
///
/// Reads every `Cookie` header as raw bytes, so that a header that is not
/// valid UTF-8, a 64 kB header or a malformed pair elsewhere in it cannot
/// make the request fail: they just mean "no session".
///
/// When the cookie appears more than once with different values (a stale
/// cookie for another path, or one planted from a sibling subdomain), none is
/// trusted, and the request gets a fresh session: adopting the wrong one is
/// how session fixation happens.
///
/// ```
/// use actix_web::http::header::{COOKIE, HeaderMap, HeaderValue};
/// use session::{SessionId, cookie::session_id_from_headers};
///
/// let id = SessionId::generate();
/// let mut headers = HeaderMap::new();
/// let value = format!("theme=dark; sid={}", id.as_str());
/// headers.insert(COOKIE, HeaderValue::from_str(&value).unwrap());
/// assert_eq!(session_id_from_headers(&headers, "sid"), Some(id));
/// ```
pub fn session_id_from_headers(headers: &HeaderMap, cookie_name: &str) -> Option<SessionId> {
    let mut found: Option<&[u8]> = None;
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(rest) = pair.strip_prefix(cookie_name.as_bytes()) else {
                continue;
            };
            let Some(candidate) = rest.strip_prefix(b"=") else {
                continue; // `sidx=...`, another cookie
            };
            // RFC 6265 allows a value in double quotes.
            let candidate = candidate
                .strip_prefix(b"\"")
                .and_then(|inner| inner.strip_suffix(b"\""))
                .unwrap_or(candidate);
            match found {
                None => found = Some(candidate),
                Some(earlier) if earlier == candidate => {}
                Some(_) => {
                    log::debug!("conflicting {cookie_name} cookies: trusting none");
                    return None;
                }
            }
        }
    }
    SessionId::parse_bytes(found?)
}

/// The cookie that hands `id` to the browser: `Path=/`, `HttpOnly`,
/// `SameSite=Lax`, `Secure` if configured, and in
/// [`CookieMode::Persistent`] a `Max-Age` of the idle timeout.
pub fn session_cookie(id: &SessionId, settings: &SessionSettings) -> Cookie<'static> {
    let mut cookie = Cookie::build(settings.cookie_name.clone(), id.as_str().to_owned())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .finish();
    if settings.cookie_mode == CookieMode::Persistent {
        let max_age = i64::try_from(settings.idle_timeout_secs).unwrap_or(i64::MAX);
        cookie.set_max_age(time::Duration::seconds(max_age));
    }
    cookie
}

/// The cookie that makes the browser forget the session: same name, path
/// and flags, empty value, `Max-Age=0`.
pub fn removal_cookie(settings: &SessionSettings) -> Cookie<'static> {
    let mut cookie = Cookie::build(settings.cookie_name.clone(), "")
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(settings.cookie_secure)
        .finish();
    cookie.make_removal();
    cookie
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{COOKIE, HeaderValue};

    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                COOKIE,
                HeaderValue::from_bytes(value).expect("a header value"),
            );
        }
        map
    }

    #[test]
    fn finds_the_id_among_other_cookies() {
        let id = SessionId::generate();
        let line = format!("a=1;sid={} ; b=2", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), "sid"),
            Some(id)
        );
    }

    #[test]
    fn accepts_a_quoted_value() {
        let id = SessionId::generate();
        let line = format!("sid=\"{}\"", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), "sid"),
            Some(id)
        );
    }

    #[test]
    fn ignores_cookies_whose_name_only_starts_alike() {
        let id = SessionId::generate();
        let line = format!("sidekick={}", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), "sid"),
            None
        );
    }

    #[test]
    fn the_same_id_twice_is_fine_but_two_different_ids_are_trusted_by_none() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let same = format!("sid={0}; sid={0}", a.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[same.as_bytes()]), "sid"),
            Some(a.clone())
        );
        let first = format!("sid={}", a.as_str());
        let second = format!("sid={}", b.as_str());
        let split = headers(&[first.as_bytes(), second.as_bytes()]);
        assert_eq!(session_id_from_headers(&split, "sid"), None);
    }

    #[test]
    fn junk_values_mean_no_session() {
        let huge = format!("sid={}", "x".repeat(10_000));
        for line in [
            &b"sid="[..],
            b"sid",
            b"sid=*",
            b"sid=\xff\xfe\x80",
            b"=;;;=",
            huge.as_bytes(),
        ] {
            assert_eq!(
                session_id_from_headers(&headers(&[line]), "sid"),
                None,
                "{line:?}"
            );
        }
    }

    #[test]
    fn a_non_utf8_cookie_elsewhere_does_not_hide_the_id() {
        let id = SessionId::generate();
        let mut line = b"junk=\xff\xfe; ".to_vec();
        line.extend_from_slice(format!("sid={}", id.as_str()).as_bytes());
        assert_eq!(session_id_from_headers(&headers(&[&line]), "sid"), Some(id));
    }

    #[test]
    fn the_removal_cookie_expires_at_once_with_the_same_path() {
        let text = removal_cookie(&SessionSettings::default()).to_string();
        assert!(text.starts_with("sid=;"), "{text}");
        assert!(
            text.contains("Max-Age=0") && text.contains("Path=/"),
            "{text}"
        );
    }

    #[test]
    fn the_cookie_has_the_protective_attributes() {
        let id = SessionId::generate();
        let settings = SessionSettings {
            cookie_secure: true,
            ..Default::default()
        };
        let text = session_cookie(&id, &settings).to_string();
        for part in [
            "Path=/",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Max-Age=1800",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        assert!(text.starts_with(&format!("sid={}", id.as_str())), "{text}");
    }

    #[test]
    fn a_browser_session_cookie_has_no_max_age() {
        let id = SessionId::generate();
        let settings = SessionSettings {
            cookie_mode: CookieMode::BrowserSession,
            ..Default::default()
        };
        let text = session_cookie(&id, &settings).to_string();
        assert!(!text.contains("Max-Age"), "{text}");
        assert!(!text.contains("Expires"), "{text}");
        assert!(text.contains("HttpOnly"), "{text}");
    }
}
