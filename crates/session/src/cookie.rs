//! Reading the session id from a request, and the `Set-Cookie` that carries it.

use actix_web::cookie::{self, Cookie, time};
use actix_web::http::header::{self, HeaderMap};

use crate::config::CookieConfig;
use crate::protect::{sign_cookie, verify_cookie};
use crate::{SameSite, SessionId};

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
/// With signing keys, only a value whose tag verifies yields its id: any
/// other costs no store lookup. With `legacy_ids`, a bare id of the NestJS
/// form is accepted too (Nest nodes never sign), to be renewed away.
///
/// The flag says the cookie was signed by a key that is no longer the
/// current one: the response should send it signed anew.
pub(crate) fn session_id_from_headers(
    headers: &HeaderMap,
    config: &CookieConfig,
) -> (Option<SessionId>, bool) {
    let Some(value) = cookie_value(headers, &config.name) else {
        return (None, false);
    };
    let verified = match &config.signing {
        Some(ring) => verify_cookie(ring, value),
        None => Some((value, true)),
    };
    if let Some((id, current)) = verified
        && let Some(id) = SessionId::parse_bytes(id)
    {
        return (Some(id), !current);
    }
    if config.legacy_ids {
        return (SessionId::parse_legacy(value), false);
    }
    if config.signing.is_some() {
        log::debug!(
            "a {} cookie whose tag does not verify: a fresh session",
            config.name
        );
    }
    (None, false)
}

/// The one value of the cookie `cookie_name`, if it appears with one value.
fn cookie_value<'a>(headers: &'a HeaderMap, cookie_name: &str) -> Option<&'a [u8]> {
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
    found
}

/// The cookie with `value` and every configured attribute.
fn with_attributes(config: &CookieConfig, value: String) -> Cookie<'static> {
    let mut cookie = Cookie::build(config.name.clone(), value)
        .path(config.path.clone())
        .http_only(config.http_only)
        .same_site(match config.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
            SameSite::None => cookie::SameSite::None,
        })
        .secure(config.secure)
        .finish();
    if let Some(domain) = &config.domain {
        cookie.set_domain(domain.clone());
    }
    cookie
}

/// The cookie that hands `id` to the browser, with the configured `Path`,
/// `Domain`, `SameSite`, `Secure` and `HttpOnly`, and in
/// [`CookieMode::Persistent`](crate::CookieMode::Persistent) a `Max-Age` of
/// the idle timeout.
///
/// Responses send [`session_cookie_header`], its text; this is the
/// reference a test holds that text to.
#[cfg(test)]
pub(crate) fn session_cookie(id: &SessionId, config: &CookieConfig) -> Cookie<'static> {
    let value = match &config.signing {
        Some(ring) => sign_cookie(ring, id.as_str()),
        None => id.as_str().to_owned(),
    };
    let mut cookie = with_attributes(config, value);
    if let Some(max_age) = config.max_age_secs {
        cookie.set_max_age(time::Duration::seconds(max_age));
    }
    cookie
}

/// What follows `name=value` in `session_cookie`'s text: the attributes,
/// which depend on the settings alone.
pub(crate) fn set_cookie_suffix(config: &CookieConfig) -> String {
    let mut template = with_attributes(config, String::new());
    if let Some(max_age) = config.max_age_secs {
        template.set_max_age(time::Duration::seconds(max_age));
    }
    let text = template.to_string();
    let start = config.name.len() + 1; // "name="
    text.get(start..).unwrap_or_default().to_owned()
}

/// The `Set-Cookie` value that hands `id` to the browser: exactly
/// `session_cookie(id, config).to_string()`, without formatting the
/// attributes on every response.
pub(crate) fn session_cookie_header(id: &SessionId, config: &CookieConfig) -> String {
    let signed;
    let value = match &config.signing {
        Some(ring) => {
            signed = sign_cookie(ring, id.as_str());
            signed.as_str()
        }
        None => id.as_str(),
    };
    let mut text =
        String::with_capacity(config.name.len() + 1 + value.len() + config.set_suffix.len());
    text.push_str(&config.name);
    text.push('=');
    text.push_str(value);
    text.push_str(&config.set_suffix);
    text
}

/// The cookie that makes the browser forget the session: the same name,
/// `Path` and `Domain` (a browser only replaces a cookie that matches all
/// three), an empty value, `Max-Age=0`.
pub(crate) fn removal_cookie(config: &CookieConfig) -> Cookie<'static> {
    let mut cookie = with_attributes(config, String::new());
    cookie.make_removal();
    cookie
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{COOKIE, HeaderValue};

    use super::*;
    use crate::config::Config;
    use crate::{CookieMode, SessionSettings};

    fn cookie_config(settings: SessionSettings) -> CookieConfig {
        Config::new(settings).expect("valid settings").cookie
    }

    /// The default cookie: bare ids, no legacy ids.
    fn plain() -> CookieConfig {
        cookie_config(SessionSettings::default())
    }

    fn signed(keys: &[&str], legacy_ids: bool) -> CookieConfig {
        cookie_config(SessionSettings {
            cookie_signing_keys: keys
                .iter()
                .map(|id| format!("{id}:{}A", "B".repeat(42)))
                .collect(),
            legacy_ids,
            ..Default::default()
        })
    }

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
            session_id_from_headers(&headers(&[line.as_bytes()]), &plain()).0,
            Some(id)
        );
    }

    #[test]
    fn accepts_a_quoted_value() {
        let id = SessionId::generate();
        let line = format!("sid=\"{}\"", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), &plain()).0,
            Some(id)
        );
    }

    #[test]
    fn ignores_cookies_whose_name_only_starts_alike() {
        let id = SessionId::generate();
        let line = format!("sidekick={}", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), &plain()).0,
            None
        );
    }

    #[test]
    fn the_same_id_twice_is_fine_but_two_different_ids_are_trusted_by_none() {
        let (a, b) = (SessionId::generate(), SessionId::generate());
        let same = format!("sid={0}; sid={0}", a.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[same.as_bytes()]), &plain()).0,
            Some(a.clone())
        );
        let first = format!("sid={}", a.as_str());
        let second = format!("sid={}", b.as_str());
        let split = headers(&[first.as_bytes(), second.as_bytes()]);
        assert_eq!(session_id_from_headers(&split, &plain()).0, None);
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
                session_id_from_headers(&headers(&[line]), &plain()).0,
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
        assert_eq!(
            session_id_from_headers(&headers(&[&line]), &plain()).0,
            Some(id)
        );
    }

    #[test]
    fn with_signing_keys_the_cookie_carries_a_tag_and_only_verified_ids_count() {
        let config = signed(&["c1"], false);
        let id = SessionId::generate();
        let text = session_cookie(&id, &config).to_string();
        let value = text
            .strip_prefix("sid=")
            .and_then(|rest| rest.split(';').next())
            .expect("a value");
        assert!(value.starts_with(&format!("{}.", id.as_str())), "{value}");
        let line = format!("sid={value}");
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), &config).0,
            Some(id.clone())
        );
        let bare = format!("sid={}", id.as_str());
        assert_eq!(
            session_id_from_headers(&headers(&[bare.as_bytes()]), &config).0,
            None
        );
        let other = format!("sid={}.{}", SessionId::generate().as_str(), &value[37..]);
        assert_eq!(
            session_id_from_headers(&headers(&[other.as_bytes()]), &config).0,
            None
        );
        // The plain config reads the signed value as no id at all.
        assert_eq!(
            session_id_from_headers(&headers(&[line.as_bytes()]), &plain()).0,
            None
        );
    }

    #[test]
    fn legacy_ids_are_read_only_when_switched_on_signed_or_not() {
        let line = b"sid=k3j9x2m1q8z7";
        assert_eq!(session_id_from_headers(&headers(&[line]), &plain()).0, None);
        let legacy = cookie_config(SessionSettings {
            legacy_ids: true,
            ..Default::default()
        });
        for config in [legacy, signed(&["c1"], true)] {
            let id = session_id_from_headers(&headers(&[line]), &config)
                .0
                .expect("legacy");
            assert!(id.is_legacy());
            assert_eq!(id.as_str(), "k3j9x2m1q8z7");
            assert_eq!(
                session_id_from_headers(&headers(&[b"sid=K3J9"]), &config).0,
                None
            );
        }
    }

    #[test]
    fn the_set_cookie_header_is_the_cookie_crates_text_for_every_setting() {
        let settings = [
            SessionSettings::default(),
            SessionSettings {
                cookie_secure: true,
                cookie_http_only: false,
                cookie_same_site: crate::SameSite::Strict,
                cookie_path: "/app".into(),
                cookie_domain: Some("example.com".into()),
                ..SessionSettings::default()
            },
            SessionSettings {
                cookie_mode: CookieMode::BrowserSession,
                cookie_same_site: crate::SameSite::None,
                cookie_secure: true,
                cookie_name: "__Host-s".into(),
                ..SessionSettings::default()
            },
        ];
        for settings in settings {
            let config = cookie_config(settings);
            let id = SessionId::generate();
            assert_eq!(
                session_cookie_header(&id, &config),
                session_cookie(&id, &config).to_string()
            );
        }
        let config = signed(&["c1"], false);
        let id = SessionId::generate();
        assert_eq!(
            session_cookie_header(&id, &config),
            session_cookie(&id, &config).to_string()
        );
    }

    #[test]
    fn the_removal_cookie_expires_at_once_with_the_same_path() {
        let text = removal_cookie(&cookie_config(SessionSettings::default())).to_string();
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
        let text = session_cookie(&id, &cookie_config(settings)).to_string();
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
        let text = session_cookie(&id, &cookie_config(settings)).to_string();
        assert!(!text.contains("Max-Age"), "{text}");
        assert!(!text.contains("Expires"), "{text}");
        assert!(text.contains("HttpOnly"), "{text}");
    }

    #[test]
    fn every_attribute_follows_the_settings_on_both_cookies() {
        let config = cookie_config(SessionSettings {
            cookie_name: "app_sid".into(),
            cookie_path: "/shop".into(),
            cookie_domain: Some("example.com".into()),
            cookie_same_site: SameSite::Strict,
            cookie_secure: true,
            cookie_http_only: false,
            idle_timeout_secs: 600,
            ..Default::default()
        });
        let id = SessionId::generate();
        let set = session_cookie(&id, &config).to_string();
        let removal = removal_cookie(&config).to_string();
        for text in [&set, &removal] {
            for part in [
                "Path=/shop",
                "Domain=example.com",
                "SameSite=Strict",
                "Secure",
            ] {
                assert!(text.contains(part), "{part} missing from {text}");
            }
            assert!(!text.contains("HttpOnly"), "{text}");
        }
        assert!(
            set.starts_with(&format!("app_sid={}", id.as_str())),
            "{set}"
        );
        assert!(set.contains("Max-Age=600"), "{set}");
        assert!(
            removal.starts_with("app_sid=;") && removal.contains("Max-Age=0"),
            "{removal}"
        );
    }

    #[test]
    fn same_site_none_is_sent_as_none_with_secure() {
        let config = cookie_config(SessionSettings {
            cookie_same_site: SameSite::None,
            cookie_secure: true,
            ..Default::default()
        });
        let text = session_cookie(&SessionId::generate(), &config).to_string();
        assert!(
            text.contains("SameSite=None") && text.contains("Secure"),
            "{text}"
        );
    }
}
