//! Cross-site request refusal for state-changing routes, as OWASP
//! recommends: a POST or DELETE whose `Origin` is neither the request's own
//! origin (scheme and `Host`) nor one of `server.allowed_origins` gets 403,
//! and nothing runs. `SameSite=Lax` alone does not stop a `fetch` DELETE
//! from a same-site subdomain.
//!
//! A request without `Origin` passes: browsers send it on every
//! cross-origin POST and DELETE, and a client that sends none (curl, a
//! server) is not a cross-site request forgery vector.

use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::ORIGIN;
use actix_web::middleware::Next;

use crate::error::ApiError;

/// The origins allowed besides the request's own.
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(Arc<Vec<String>>);

impl AllowedOrigins {
    /// From `server.allowed_origins`, checked by `Settings::validate`.
    pub fn new(origins: Vec<String>) -> Self {
        Self(Arc::new(origins))
    }
}

/// Whether `text` is an origin as browsers send it: `http` or `https`, a
/// host, maybe a port, nothing after.
/// A browser never sends a default port (`:80` for http, `:443` for
/// https) nor an empty one, so such a setting could never match: refused.
pub fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let shaped = matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:[]".contains(&b));
    if !shaped {
        return false;
    }
    // The port is what follows the last ':' outside an IPv6 literal.
    let after_host = rest.rsplit_once(']').map_or(rest, |(_, tail)| tail);
    match after_host.rsplit_once(':') {
        None => true,
        Some((host, port)) => {
            let default = if scheme == "https" { "443" } else { "80" };
            (rest.starts_with('[') || !host.is_empty())
                && !port.is_empty()
                && port != default
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
    }
}

/// The middleware: `from_fn(origin::refuse_cross_site)` with
/// [`AllowedOrigins`] in the app data.
pub async fn refuse_cross_site(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state
        && let Some(origin) = request.headers().get(ORIGIN)
        && !allowed(&request, origin.as_bytes())
    {
        let error = ApiError::CrossSite;
        return Ok(request.error_response(error));
    }
    Ok(next.call(request).await?.map_into_boxed_body())
}

fn allowed(request: &ServiceRequest, origin: &[u8]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let info = request.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    if origin.eq_ignore_ascii_case(&own) {
        return true;
    }
    request
        .app_data::<AllowedOrigins>()
        .is_some_and(|allowed| allowed.0.iter().any(|o| o == origin))
}

#[cfg(test)]
mod tests {
    use super::is_origin;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "http://localhost:8080",
            "https://app.example.com",
            "http://[::1]:8080",
            "http://[::1]",
        ] {
            assert!(is_origin(good), "{good}");
        }
        for bad in [
            "",
            "localhost",
            "ftp://x",
            "https://",
            "https://a.com/",
            "https://A.com",
            "null",
            "https://a.com/path",
        ] {
            assert!(!is_origin(bad), "{bad}");
        }
    }
}
