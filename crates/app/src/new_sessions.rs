//! The per-client limit on NEW sessions (`server.new_session_limit`), and
//! the proxies whose `X-Forwarded-For` names the client
//! (`server.trusted_proxies`): the app's [`NewSessionGate`].
//!
//! The session library asks the gate where a session is about to be
//! created, before anything is written (see [`NewSessionGate`]): requests
//! on live sessions never reach it, and a random `sid` cookie does not get
//! around it. This module only says who the client is and how many new
//! sessions it may have:
//!
//! - **The limit**: `governor`'s GCRA, one state per client: `burst` new
//!   sessions at once, then `per_second` sustained. In this process's
//!   memory, so per app node: a fleet of N nodes admits up to N times the
//!   rate from one client.
//! - **The client**: an IPv4 address, or an IPv6 address's /64 (one
//!   subscriber's usual allocation: counting each of its 2^64 addresses
//!   apart would be no limit at all).
//! - **Memory**: the keyed store grows by one entry (about 40 bytes) per
//!   client seen; [`NewSessionLimit`] drops the entries that have refilled
//!   (`retain_recent`) every time the number of checks since the last
//!   sweep reaches the number of entries it kept (at least 1,024). The
//!   store then never holds more than twice the clients that were still
//!   refilling at the last sweep (or 2,048), and the sweeps cost O(1) per
//!   check, amortized.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};
use session::NewSessionGate;

use crate::settings::NewSessionLimitSettings;

/// The largest `server.new_session_limit.per_second`: a refill interval of
/// a microsecond. Past it the limit would limit nothing; 0 turns it off.
pub const MAX_PER_SECOND: u32 = 1_000_000;

/// The fewest checks between two sweeps of the limiter's keyed store.
const MIN_SWEEP_INTERVAL: usize = 1024;

/// The app's [`NewSessionGate`]: `server.new_session_limit` per client,
/// the client as `server.trusted_proxies` says. Built once at start-up; every
/// worker shares it.
pub struct NewSessionLimit {
    /// One GCRA state per client key (see [`client_key`]); lives as long as
    /// the app.
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// What `limiter` allows, for `Debug`.
    quota: Quota,
    /// Whose `X-Forwarded-For` names the client.
    proxies: TrustedProxies,
    /// Checks since the last sweep of `limiter`'s store.
    checks_since_sweep: AtomicUsize,
    /// Sweep once `checks_since_sweep` reaches this: the entries the last
    /// sweep kept, at least [`MIN_SWEEP_INTERVAL`].
    sweep_after: AtomicUsize,
}

impl NewSessionLimit {
    /// The limit `settings` ask for, or `None` when either number is 0 (the
    /// limit is off: no gate, and no work per request).
    pub fn new(settings: &NewSessionLimitSettings, proxies: TrustedProxies) -> Option<Self> {
        let per_second = NonZeroU32::new(settings.per_second.min(MAX_PER_SECOND))?;
        let burst = NonZeroU32::new(settings.burst)?;
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            quota,
            proxies,
            checks_since_sweep: AtomicUsize::new(0),
            sweep_after: AtomicUsize::new(MIN_SWEEP_INTERVAL),
        })
    }

    /// Drops the clients whose state has refilled, once enough checks have
    /// passed since the last sweep (see the module docs).
    fn sweep_if_due(&self) {
        let checks = self.checks_since_sweep.fetch_add(1, Ordering::Relaxed) + 1;
        if checks < self.sweep_after.load(Ordering::Relaxed) {
            return;
        }
        self.checks_since_sweep.store(0, Ordering::Relaxed);
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let kept = self.limiter.len();
        self.sweep_after
            .store(kept.max(MIN_SWEEP_INTERVAL), Ordering::Relaxed);
    }

    /// Clients the limiter holds a state for.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.limiter.len()
    }
}

/// The quota and the proxies, never the clients the limiter holds.
impl std::fmt::Debug for NewSessionLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSessionLimit")
            .field("quota", &self.quota)
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

impl NewSessionGate for NewSessionLimit {
    fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.proxies.contains(peer)
    }

    fn admit(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let checked = self.limiter.check_key(&client_key(client));
        self.sweep_if_due();
        checked.map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

/// Whose new sessions count together: an IPv4 address, an IPv6 address's
/// /64, and every connection without an address as one.
fn client_key(client: Option<IpAddr>) -> IpAddr {
    match client {
        Some(IpAddr::V6(v6)) => {
            let prefix = v6.to_bits() & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from_bits(prefix))
        }
        Some(v4) => v4,
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// `server.trusted_proxies`: addresses and CIDR blocks of the proxies in
/// front of the app. Only a connection from one of them has its
/// `X-Forwarded-For` read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Block>);

/// One address block: the address with its host bits clear, and the
/// prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    network: IpAddr,
    prefix: u8,
}

impl TrustedProxies {
    /// Parses each entry: `a.b.c.d`, `a.b.c.d/n`, an IPv6 address, or
    /// `ipv6/n`.
    ///
    /// # Errors
    ///
    /// One sentence naming `server.trusted_proxies` and the first entry
    /// that is not one of those, or a block with bits set past its prefix
    /// (`10.0.0.1/8`: which was meant?).
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                Block::parse(entry.trim())
                    .map_err(|problem| format!("server.trusted_proxies holds {entry:?}, {problem}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether `address` lies in one of the blocks.
    pub fn contains(&self, address: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(address))
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Block {
    fn parse(entry: &str) -> Result<Self, String> {
        let not_an_address = || {
            "which is not an IP address or CIDR block (a.b.c.d, a.b.c.d/n, IPv6, IPv6/n)".to_owned()
        };
        let (address, prefix) = match entry.split_once('/') {
            Some((address, prefix)) => {
                let prefix: u8 = prefix.parse().map_err(|_| not_an_address())?;
                (address, Some(prefix))
            }
            None => (entry, None),
        };
        let address: IpAddr = address.parse().map_err(|_| not_an_address())?;
        let address = address.to_canonical();
        let bits = bits_of(address);
        let prefix = prefix.unwrap_or(bits);
        if prefix > bits {
            return Err(format!("whose prefix is longer than {bits} bits"));
        }
        let block = Self {
            network: masked(address, prefix),
            prefix,
        };
        if block.network != address {
            return Err(format!(
                "which has bits set past its prefix: did you mean {}/{prefix}?",
                block.network
            ));
        }
        Ok(block)
    }

    fn contains(&self, address: IpAddr) -> bool {
        bits_of(address) == bits_of(self.network) && masked(address, self.prefix) == self.network
    }
}

/// 32 for IPv4, 128 for IPv6.
fn bits_of(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `address` with every bit past the first `prefix` cleared.
fn masked(address: IpAddr, prefix: u8) -> IpAddr {
    match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((v4.to_bits() & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((v6.to_bits() & mask).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn limit(per_second: u32, burst: u32) -> NewSessionLimit {
        NewSessionLimit::new(
            &NewSessionLimitSettings { per_second, burst },
            TrustedProxies::default(),
        )
        .expect("a limit")
    }

    #[test]
    fn past_its_burst_a_client_waits_and_another_does_not() {
        let limit = limit(1, 2);
        let (one, other) = (Some(ip("192.0.2.1")), Some(ip("192.0.2.2")));
        assert_eq!(limit.admit(one), Ok(()));
        assert_eq!(limit.admit(one), Ok(()));
        let wait = limit.admit(one).expect_err("past the burst");
        assert!(
            wait > Duration::from_millis(500) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(limit.admit(other), Ok(()));
    }

    #[test]
    fn debug_output_names_the_quota_never_a_client() {
        let limit = limit(10, 1000);
        assert_eq!(limit.admit(Some(ip("192.0.2.77"))), Ok(()));
        let shown = format!("{limit:?}");
        assert!(shown.contains("max_burst: 1000"), "{shown}");
        assert!(!shown.contains("192.0.2.77"), "{shown}");
    }

    #[test]
    fn an_ipv6_client_is_its_64_bit_prefix() {
        let limit = limit(1, 1);
        assert_eq!(limit.admit(Some(ip("2001:db8:1:2::1"))), Ok(()));
        assert!(limit.admit(Some(ip("2001:db8:1:2:ffff::9"))).is_err());
        assert_eq!(limit.admit(Some(ip("2001:db8:1:3::1"))), Ok(()));
    }

    #[test]
    fn zero_for_either_number_turns_the_limit_off() {
        let proxies = TrustedProxies::default();
        for (per_second, burst) in [(0, 1000), (10, 0), (0, 0)] {
            let settings = NewSessionLimitSettings { per_second, burst };
            assert!(NewSessionLimit::new(&settings, proxies.clone()).is_none());
        }
    }

    #[test]
    fn a_flood_from_distinct_addresses_keeps_the_limiter_small() {
        // Each client's state refills within 2 microseconds, so a sweep
        // finds only the last few still refilling.
        let limit = limit(MAX_PER_SECOND, 1);
        let mut most = 0;
        for n in 0..100_000_u32 {
            assert_eq!(
                limit.admit(Some(IpAddr::V4((0x0a00_0000 + n).into()))),
                Ok(())
            );
            most = most.max(limit.clients());
        }
        assert!(most <= 2 * MIN_SWEEP_INTERVAL, "{most} clients held");
    }

    #[test]
    fn trusted_proxies_are_addresses_and_blocks() {
        let entries: Vec<String> = ["127.0.0.1", " 10.0.0.0/8", "::1", "fd00::/8", "0.0.0.0/0"]
            .map(str::to_owned)
            .into();
        let proxies = TrustedProxies::parse(&entries[..4]).expect("valid");
        for inside in ["127.0.0.1", "10.200.3.4", "::1", "fd12::5"] {
            assert!(proxies.contains(ip(inside)), "{inside}");
        }
        for outside in ["127.0.0.2", "11.0.0.1", "::2", "fe80::1"] {
            assert!(!proxies.contains(ip(outside)), "{outside}");
        }
        let everyone = TrustedProxies::parse(&entries[4..]).expect("valid");
        assert!(everyone.contains(ip("203.0.113.9")));
        assert!(
            !everyone.contains(ip("2001:db8::1")),
            "an IPv4 block holds no IPv6"
        );
    }

    #[test]
    fn a_trusted_proxy_entry_that_is_not_a_block_is_refused_by_name() {
        for (entry, problem) in [
            ("nginx", "not an IP address"),
            ("10.0.0.300", "not an IP address"),
            ("10.0.0.0/33", "longer than 32 bits"),
            ("10.0.0.0/x", "not an IP address"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
            ("fd00::1/8", "did you mean fd00::/8?"),
            ("10.0.0.1\n10.0.0.2", "not an IP address"),
        ] {
            let message = TrustedProxies::parse(&[entry.to_owned()]).expect_err(entry);
            assert!(
                message.starts_with("server.trusted_proxies holds") && message.contains(problem),
                "{entry:?}: {message}"
            );
            assert!(!message.contains('\n'), "{message}");
        }
    }
}
