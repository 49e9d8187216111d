//! Where webhooks may go: `http` or `https` URLs whose host is a public
//! address. Loopback, private (RFC 1918, unique local), link-local
//! (including cloud metadata at 169.254.169.254), shared, unspecified,
//! multicast and documentation ranges are refused unless private addresses
//! are allowed (`APP_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES`, for tests and
//! receivers inside one's own network).
//!
//! Checked twice: when a subscription is made (the URL, and its host when it
//! is an address or `localhost`), and when a delivery is sent, on every
//! address the host name resolves to ([`GuardedResolver`]), so that a name
//! pointing at an internal address — or changed to point at one later — is
//! refused at the moment of connecting. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a URL is not a place webhooks may go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a URL: {0}")]
    NotAUrl(String),
    #[error("the scheme must be http or https")]
    Scheme,
    #[error("a URL with a user name or password is not accepted; authenticate with the signature")]
    Credentials,
    #[error("{0} is a loopback, private, link-local or otherwise internal address")]
    Internal(String),
}

/// Checks a subscription's URL; returns it normalised.
pub fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, Refused> {
    let url = reqwest::Url::parse(raw).map_err(|e| Refused::NotAUrl(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refused::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refused::Credentials);
    }
    let host = match url.host() {
        Some(host) => host,
        None => return Err(Refused::NotAUrl("no host".into())),
    };
    if !allow_private {
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return Err(Refused::Internal(name));
                }
                None
            }
        };
        if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
            return Err(Refused::Internal(ip.to_string()));
        }
    }
    Ok(url)
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // shared address space (carrier-grade NAT), 100.64.0.0/10
        || (a == 100 && (64..128).contains(&b))
        // benchmarking, 198.18.0.0/15
        || (a == 198 && (18..20).contains(&b))
        // reserved, 240.0.0.0/4
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // unique local, fc00::/7
        || (first & 0xfe00) == 0xfc00
        // link-local, fe80::/10
        || (first & 0xffc0) == 0xfe80
        // documentation, 2001:db8::/32
        || (first == 0x2001 && ip.segments()[1] == 0x0db8)
        // IPv4-compatible and NAT64 forms are judged by their IPv4 part
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

/// The delivery client's resolver: the system's, with every internal
/// address removed (unless allowed); a name left with none fails to resolve.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found.iter().copied().filter(|a| allow_private || is_public(a.ip())).collect();
            if kept.is_empty() {
                let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Refused::Internal(format!("{host} ({})", addresses(&found))));
                return Err(e);
            }
            let addrs: Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
}

fn addresses(found: &[SocketAddr]) -> String {
    found.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
}

/// The HTTP client deliveries are sent with: no redirects, the guarded
/// resolver, a timeout per request.
pub fn client(allow_private: bool, timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(GuardedResolver { allow_private }))
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("erp-stock-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for internal in [
            "http://127.0.0.1/hook",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
        ] {
            assert!(matches!(check_url(internal, false), Err(Refused::Internal(_))), "{internal}");
            assert!(check_url(internal, true).is_ok(), "{internal} when allowed");
        }
        for public in ["https://hooks.example.com/erp", "http://93.184.216.34/x", "https://[2606:4700::1111]/"] {
            assert!(check_url(public, false).is_ok(), "{public}");
        }
    }

    #[test]
    fn only_http_and_https_without_credentials() {
        assert_eq!(check_url("ftp://example.com/", true), Err(Refused::Scheme));
        assert_eq!(check_url("file:///etc/passwd", true), Err(Refused::Scheme));
        assert_eq!(check_url("https://user:pw@example.com/", true), Err(Refused::Credentials));
        assert!(matches!(check_url("not a url", true), Err(Refused::NotAUrl(_))));
    }
}
