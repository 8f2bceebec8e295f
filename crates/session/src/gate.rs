//! [`NewSessionGate`]: the application's say on whether a client may create
//! one more session, and which address is the client's.
//!
//! The gate is asked where sessions are created ([`SessionService`]'s one
//! creation path), not where a request arrives: a request that sends a
//! random or dead `sid` cookie creates a session just as one without a
//! cookie does, and is asked all the same. A request on a live session is
//! never asked. The request keeps what it needs for the question from the
//! moment it opens its session (the peer address, and a trusted proxy's
//! `X-Forwarded-For` header by reference), and works out the address only
//! when a creation asks.
//!
//! [`SessionService`]: crate::SessionService

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderValue, X_FORWARDED_FOR};

/// Decides whether a client may create one more session: a per-client rate
/// limit, typically. Set it with
/// [`SessionMiddlewareBuilder::new_session_gate`](crate::SessionMiddlewareBuilder::new_session_gate).
///
/// It knows nothing of HTTP: the middleware works out the client's
/// address (see [`NewSessionGate::is_trusted_proxy`]) and asks
/// [`NewSessionGate::admit`] once per session about to be created, before
/// anything is written:
///
/// - a request without a session cookie that writes (`insert`, `incr`,
///   `compare_and_set`, a sign-in);
/// - a request whose cookie names no live session (expired, purged, forged,
///   never issued) that then writes: it gets a fresh session, so it is asked
///   as a new client would be.
///
/// It is never asked for a request on a live session (its reads, writes,
/// `renew`, a sign-in on it), nor for [`SessionService`](crate::SessionService)'s
/// own calls outside a request. A refusal ends the request's session work
/// with [`SessionError::TooManyNewSessions`](crate::SessionError::TooManyNewSessions):
/// 429 with `Retry-After`, nothing written.
///
/// ```
/// use std::net::IpAddr;
/// use std::time::Duration;
///
/// /// Refuses every new session: a site in read-only maintenance.
/// #[derive(Debug)]
/// struct Closed;
///
/// impl session::NewSessionGate for Closed {
///     fn admit(&self, _client: Option<IpAddr>) -> Result<(), Duration> {
///         Err(Duration::from_secs(60))
///     }
/// }
///
/// let sessions = session::SessionMiddleware::builder(session::MemorySessionStore::new())
///     .new_session_gate(Closed)
///     .build()?;
/// # let _ = sessions;
/// # Ok::<(), session::ConfigError>(())
/// ```
pub trait NewSessionGate: Send + Sync + fmt::Debug + 'static {
    /// Whether `peer`, the address a connection comes from, is a proxy
    /// whose `X-Forwarded-For` names the client. Asked when a request opens
    /// its session, so keep it cheap. Default: no peer is (the header is
    /// never read, whoever sends it).
    fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let _ = peer;
        false
    }

    /// Admits one more new session for `client`, or refuses it with the
    /// time after which a retry may be admitted.
    ///
    /// `client` is the connection's peer address; when that peer is a
    /// trusted proxy, the right-most `X-Forwarded-For` address that is not
    /// one (every entry right of it was written by a trusted proxy; an
    /// entry that is not an address stops the walk at the proxy that passed
    /// it on). `None` when the connection has no IP address (a Unix
    /// socket, a test request built without one).
    ///
    /// # Errors
    ///
    /// The time to wait before a retry, sent as `Retry-After`.
    fn admit(&self, client: Option<IpAddr>) -> Result<(), Duration>;
}

/// What a request knows of its client for [`NewSessionGate::admit`],
/// captured when it opens its session (only when a gate is set) and kept
/// until a creation asks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Client {
    /// The connection's peer address.
    peer: Option<IpAddr>,
    /// The `X-Forwarded-For` header lines, in order: kept only when the
    /// peer is a trusted proxy (a reference to the request's bytes, no
    /// copy).
    forwarded_for: Vec<HeaderValue>,
}

impl Client {
    /// The peer, and its `X-Forwarded-For` if `gate` trusts it.
    pub(crate) fn of(request: &HttpRequest, gate: &dyn NewSessionGate) -> Self {
        let peer = request
            .peer_addr()
            .map(|address| address.ip().to_canonical());
        let forwarded_for = match peer {
            Some(peer) if gate.is_trusted_proxy(peer) => request
                .headers()
                .get_all(X_FORWARDED_FOR)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        Self {
            peer,
            forwarded_for,
        }
    }

    /// The client's address, as [`NewSessionGate::admit`] describes it.
    pub(crate) fn address(&self, gate: &dyn NewSessionGate) -> Option<IpAddr> {
        let peer = self.peer?;
        Some(forwarded_client(peer, &self.forwarded_for, |address| {
            gate.is_trusted_proxy(address)
        }))
    }
}

/// Walks `X-Forwarded-For` from the right, starting at a trusted `peer`:
/// each trusted hop vouches for the entry left of it, so the client is the
/// first entry that is not trusted. An entry that is not an address stops
/// the walk at the hop that passed it on; a chain of trusted hops only
/// gives its left-most one. The header's own lines are in order; entries
/// within a line are comma-separated.
fn forwarded_client(
    peer: IpAddr,
    forwarded_for: &[HeaderValue],
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    let mut client = peer;
    let entries = forwarded_for
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&byte| byte == b','));
    for entry in entries {
        let Some(address) = parse_entry(entry) else {
            break;
        };
        client = address;
        if !trusted(address) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address and port.
fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    let address = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))?;
    Some(address.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn header(lines: &[&str]) -> Vec<HeaderValue> {
        lines
            .iter()
            .map(|line| HeaderValue::from_str(line).expect("a header value"))
            .collect()
    }

    /// Trusts 10.0.0.0/8 and ::1.
    fn proxies(address: IpAddr) -> bool {
        match address {
            IpAddr::V4(v4) => v4.octets()[0] == 10,
            IpAddr::V6(v6) => v6.is_loopback(),
        }
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let peer = ip("10.0.0.1");
        let cases: [(&[&str], &str); 9] = [
            // The proxy names the client.
            (&["203.0.113.7"], "203.0.113.7"),
            // Whatever the client wrote left of it is ignored.
            (&["198.51.100.1, 203.0.113.7"], "203.0.113.7"),
            // A second trusted hop vouches for the entry left of it.
            (&["203.0.113.7, 10.1.2.3"], "203.0.113.7"),
            // Header lines in order, the last one nearest.
            (&["198.51.100.1", "203.0.113.7, 10.1.2.3"], "203.0.113.7"),
            (&["203.0.113.7", "10.1.2.3"], "203.0.113.7"),
            // Only trusted hops: the left-most of them.
            (&["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
            // Not an address: the walk stops at the hop that passed it on.
            (&["203.0.113.7, garbage, 10.1.2.3"], "10.1.2.3"),
            (&["203.0.113.7,"], "10.0.0.1"),
            // With a port, and IPv4 written as IPv6.
            (&["[::ffff:203.0.113.7]:4711"], "203.0.113.7"),
        ];
        for (lines, client) in cases {
            assert_eq!(
                forwarded_client(peer, &header(lines), proxies),
                ip(client),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn without_the_header_the_client_is_the_peer() {
        assert_eq!(
            forwarded_client(ip("::1"), &[], proxies),
            ip("::1"),
            "a trusted peer with no header"
        );
        assert_eq!(
            forwarded_client(ip("2001:db8::1"), &header(&["  2001:db8::2  "]), proxies),
            ip("2001:db8::2"),
        );
    }

    #[derive(Debug)]
    struct TrustsTen;

    impl NewSessionGate for TrustsTen {
        fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
            proxies(peer)
        }
        fn admit(&self, _client: Option<IpAddr>) -> Result<(), Duration> {
            Ok(())
        }
    }

    #[test]
    fn the_header_of_an_untrusted_peer_is_never_read() {
        let spoofed = actix_web::test::TestRequest::default()
            .peer_addr("198.51.100.9:5000".parse().expect("a socket address"))
            .insert_header((X_FORWARDED_FOR, "203.0.113.7"))
            .to_http_request();
        let client = Client::of(&spoofed, &TrustsTen);
        assert!(client.forwarded_for.is_empty());
        assert_eq!(client.address(&TrustsTen), Some(ip("198.51.100.9")));

        let proxied = actix_web::test::TestRequest::default()
            .peer_addr("10.0.0.1:5000".parse().expect("a socket address"))
            .insert_header((X_FORWARDED_FOR, "203.0.113.7"))
            .to_http_request();
        assert_eq!(
            Client::of(&proxied, &TrustsTen).address(&TrustsTen),
            Some(ip("203.0.113.7"))
        );

        let no_address = actix_web::test::TestRequest::default().to_http_request();
        assert_eq!(
            Client::of(&no_address, &TrustsTen).address(&TrustsTen),
            None
        );
    }
}
