//! Gate 2 of egress control: the resolver of every upstream connection.
//!
//! A *name* is resolved exactly once; if any address it resolves to is
//! prohibited (unspecified, link-local incl. `169.254.169.254`, cloud
//! metadata, multicast/broadcast, or loopback for any name but `localhost`),
//! the connection is refused and the guest gets `destination-IP-prohibited`.
//! The connection is then made to those very addresses, so there is no
//! DNS-rebinding window between check and use.

use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Addresses a name may never resolve to (gate 2). `allow_loopback` is true
/// only for the name `localhost`.
pub(crate) fn prohibited(ip: IpAddr, allow_loopback: bool) -> bool {
    match ip {
        IpAddr::V4(v4) => prohibited_v4(v4, allow_loopback),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return prohibited_v4(v4, allow_loopback);
            }
            let seg = v6.segments();
            v6.is_unspecified()
                || (v6.is_loopback() && !allow_loopback)
                || v6.is_multicast()
                || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254) // AWS IMDS v6
        }
    }
}

fn prohibited_v4(v4: Ipv4Addr, allow_loopback: bool) -> bool {
    let o = v4.octets();
    o[0] == 0 // "this network", incl. 0.0.0.0
        || (v4.is_loopback() && !allow_loopback)
        || v4.is_link_local() // 169.254.0.0/16, incl. 169.254.169.254
        || v4.is_multicast()
        || v4.is_broadcast()
        || v4 == Ipv4Addr::new(100, 100, 100, 200) // Alibaba Cloud metadata
}

/// The reason a resolution was refused; found again in the client error's
/// source chain to give the guest `destination-IP-prohibited`.
#[derive(Debug, thiserror::Error)]
#[error("`{name}` resolves to prohibited address {addr}")]
pub(crate) struct ProhibitedAddress {
    name: String,
    addr: IpAddr,
}

/// DNS resolver for the pooled client: resolves once and refuses names that
/// resolve to any prohibited address (gate 2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedResolver;

type ResolveFuture =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, ResolveError>> + Send>>;

/// Why resolution failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    #[error(transparent)]
    Prohibited(#[from] ProhibitedAddress),
    #[error("DNS lookup of `{0}` failed: {1}")]
    Lookup(String, std::io::Error),
    #[error("`{0}` did not resolve to any address")]
    Empty(String),
}

impl tower::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = ResolveFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let name = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Lookup(name.clone(), e))?
                .collect();
            let allow_loopback = name.trim_end_matches('.').eq_ignore_ascii_case("localhost");
            if let Some(bad) = addrs.iter().find(|a| prohibited(a.ip(), allow_loopback)) {
                return Err(ProhibitedAddress {
                    name,
                    addr: bad.ip(),
                }
                .into());
            }
            if addrs.is_empty() {
                return Err(ResolveError::Empty(name));
            }
            Ok(addrs.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prohibited_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for bad in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
        ] {
            assert!(prohibited(ip(bad), false), "{bad}");
        }
        for good in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1"] {
            assert!(!prohibited(ip(good), false), "{good}");
        }
        assert!(!prohibited(ip("127.0.0.1"), true));
        assert!(prohibited(ip("169.254.169.254"), true));
    }
}
