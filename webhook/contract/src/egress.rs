//! Where the BMC may send requests on a user's behalf: Redfish event `Destination`s (the
//! sidecar POSTs to them) and virtual-media image URLs (the controller's DataVolume makes CDI
//! fetch them). A Redfish user is not a cluster user: without this guard one could make the
//! sidecar POST to the kube-apiserver or a cloud metadata service (169.254.169.254), or make
//! CDI import from them.
//!
//! The rules for one address:
//! 1. in ranges the installation lists (`deny`: its service and pod ranges; `allow`: what it
//!    opens up, e.g. the Service of its Ironic image server inside a denied range): the most
//!    specific range (longest prefix) decides, `deny` on a tie;
//! 2. otherwise in a built-in range (loopback, link-local incl. 169.254.169.254 and
//!    fe80::/10, unspecified, multicast, broadcast; IPv4-mapped IPv6 judged as IPv4) ->
//!    refused;
//! 3. anything else -> allowed.
//!
//! Every address a name resolves to is checked when the request is made, not only when the
//! URL is accepted, so a name that later resolves elsewhere (DNS rebinding) gains nothing.
//! The controller passes its `allow`/`deny` to the sidecar in [`ALLOW_ENV`] and [`DENY_ENV`]
//! as comma-separated CIDRs ([`EgressPolicy::to_env`]).
//!
//! URLs carrying credentials (`user:pass@host`) are refused: they would be stored in a VM
//! annotation and a DataVolume that many can read. [`redact`] strips userinfo, query and
//! fragment from every URL before it reaches a log.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Environment variables of the sidecar (flags `--egress-allow` / `--egress-deny`).
pub const ALLOW_ENV: &str = "KUBEVIRT_BMC_EGRESS_ALLOW";
pub const DENY_ENV: &str = "KUBEVIRT_BMC_EGRESS_DENY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("{0:?} is not a CIDR range (expected e.g. 10.96.0.0/12 or fd00::/8)")]
    BadCidr(String),
    #[error("the URL {0} is not an http or https URL with a host")]
    BadUrl(String),
    #[error(
        "the URL {0} carries credentials (user:password@); they would be stored where others can read them"
    )]
    Credentials(String),
    #[error("requests to {addr} ({why}) are not allowed from the BMC")]
    Refused { addr: IpAddr, why: &'static str },
}

/// An IP range, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
        Cidr {
            network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
        let [a, b, c, d, e, f, g, h] = segments;
        Cidr {
            network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix,
        }
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = EgressError;

    fn from_str(text: &str) -> Result<Cidr, EgressError> {
        let bad = || EgressError::BadCidr(text.to_owned());
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address.parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses `a,b,c` (spaces and empty items ignored).
pub fn parse_list(text: &str) -> Result<Vec<Cidr>, EgressError> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::parse)
        .collect()
}

/// Ranges refused unless the installation allows them, with why, for the error message.
const BUILT_IN: &[(Cidr, &str)] = &[
    (Cidr::v4(127, 0, 0, 0, 8), "loopback"),
    (Cidr::v4(169, 254, 0, 0, 16), "link-local, cloud metadata"),
    (Cidr::v4(0, 0, 0, 0, 8), "unspecified"),
    (Cidr::v4(224, 0, 0, 0, 4), "multicast"),
    (Cidr::v4(255, 255, 255, 255, 32), "broadcast"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// The installation's ranges on top of the built-in ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl EgressPolicy {
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>) -> EgressPolicy {
        EgressPolicy { allow, deny }
    }

    /// Whether a request to `addr` may be made (see the module's rules).
    pub fn check(&self, addr: IpAddr) -> Result<(), EgressError> {
        // ::ffff:127.0.0.1 reaches 127.0.0.1: judge the IPv4 address it carries.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let longest = |list: &[Cidr]| {
            list.iter()
                .filter(|range| range.contains(addr))
                .map(|range| range.prefix)
                .max()
        };
        match (longest(&self.deny), longest(&self.allow)) {
            (Some(deny), Some(allow)) if allow > deny => return Ok(()),
            (Some(_), _) => {
                return Err(EgressError::Refused {
                    addr,
                    why: "a range the installation denies",
                });
            }
            (None, Some(_)) => return Ok(()),
            (None, None) => {}
        }
        match BUILT_IN.iter().find(|(range, _)| range.contains(addr)) {
            Some((_, why)) => Err(EgressError::Refused { addr, why }),
            None => Ok(()),
        }
    }

    /// Checks a URL as accepted from a client: http(s), a host, no credentials, and a host
    /// that is an address must pass [`check`](Self::check). A name is checked on every
    /// address it resolves to when the request is made.
    pub fn check_url(&self, url: &str) -> Result<Target, EgressError> {
        let target = Target::parse(url)?;
        if let Host::Ip(addr) = target.host {
            self.check(addr)?;
        }
        Ok(target)
    }

    /// The two environment values for the sidecar: (allow, deny).
    pub fn to_env(&self) -> (String, String) {
        let join = |list: &[Cidr]| {
            list.iter()
                .map(Cidr::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        (join(&self.allow), join(&self.deny))
    }
}

/// The host of a URL: an address, or a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

/// What a request to a URL connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: u16,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, EgressError> {
        let bad = || EgressError::BadUrl(redact(url));
        let (rest, default_port) = if let Some(rest) = strip_scheme(url, "https://") {
            (rest, 443)
        } else if let Some(rest) = strip_scheme(url, "http://") {
            (rest, 80)
        } else {
            return Err(bad());
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(EgressError::Credentials(redact(url)));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                after => Some(after.strip_prefix(':').ok_or_else(bad)?),
            };
            let addr: Ipv6Addr = host.parse().map_err(|_| bad())?;
            (Host::Ip(IpAddr::V6(addr)), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(bad());
            }
            match host.parse::<Ipv4Addr>() {
                Ok(addr) => (Host::Ip(IpAddr::V4(addr)), port),
                Err(_) => (Host::Name(host.to_ascii_lowercase()), port),
            }
        };
        let port = match port {
            None => default_port,
            Some(port) => port.parse().map_err(|_| bad())?,
        };
        Ok(Target { host, port })
    }
}

fn strip_scheme<'a>(url: &'a str, scheme: &str) -> Option<&'a str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &url[scheme.len()..])
}

/// The URL fit for a log line: no userinfo, query or fragment (signed URLs carry their
/// signature in the query).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let hidden = end < rest.len();
    let rest = &rest[..end];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut out = String::new();
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    out.push_str(authority);
    out.push_str(path);
    if hidden {
        out.push_str("?…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn built_in_ranges_are_refused_by_default() {
        let policy = EgressPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(
                matches!(policy.check(ip(refused)), Err(EgressError::Refused { .. })),
                "{refused} allowed"
            );
        }
        for allowed in ["10.0.0.1", "192.0.2.10", "2001:db8::1", "fec0::1"] {
            assert!(policy.check(ip(allowed)).is_ok(), "{allowed} refused");
        }
    }

    #[test]
    fn the_installation_denies_and_allows_more() {
        let policy = EgressPolicy::new(
            parse_list("127.0.0.0/8, 10.96.7.20/32, 10.244.0.0/16").unwrap(),
            parse_list("10.96.0.0/12,10.244.0.0/16,fd00::/8").unwrap(),
        );
        assert!(policy.check(ip("127.0.0.1")).is_ok());
        assert!(policy.check(ip("10.96.0.1")).is_err(), "the API service");
        assert!(policy.check(ip("10.111.1.1")).is_err());
        assert!(policy.check(ip("10.112.0.1")).is_ok(), "outside the /12");
        assert!(
            policy.check(ip("10.96.7.20")).is_ok(),
            "a more specific allow opens one Service"
        );
        assert!(policy.check(ip("10.244.5.1")).is_err(), "deny wins a tie");
        assert!(policy.check(ip("fd00::5")).is_err());
        assert!(policy.check(ip("169.254.169.254")).is_err());
        let (allow, deny) = policy.to_env();
        assert_eq!(allow, "127.0.0.0/8,10.96.7.20/32,10.244.0.0/16");
        assert_eq!(
            EgressPolicy::new(parse_list(&allow).unwrap(), parse_list(&deny).unwrap()),
            policy
        );
    }

    #[test]
    fn cidrs_parse_strictly() {
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            Cidr::v4(10, 0, 0, 0, 8)
        );
        assert!("10.0.0.1".parse::<Cidr>().unwrap().contains(ip("10.0.0.1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "fd00::/129", "ten/8", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
        assert!(parse_list("").unwrap().is_empty());
    }

    #[test]
    fn urls_name_their_target_and_never_carry_credentials() {
        let policy = EgressPolicy::default();
        assert_eq!(
            policy.check_url("https://Events.Example:8443/x?y").unwrap(),
            Target {
                host: Host::Name("events.example".into()),
                port: 8443
            }
        );
        assert_eq!(
            policy.check_url("http://[2001:db8::1]/x").unwrap(),
            Target {
                host: Host::Ip(ip("2001:db8::1")),
                port: 80
            }
        );
        for refused in [
            "https://127.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:80/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(
                matches!(policy.check_url(refused), Err(EgressError::Refused { .. })),
                "{refused}"
            );
        }
        let error = policy
            .check_url("https://admin:s3cret@images.example/a.iso")
            .unwrap_err();
        assert!(matches!(error, EgressError::Credentials(_)));
        assert!(!error.to_string().contains("s3cret"), "{error}");
        for bad in [
            "ftp://x",
            "http://",
            "http://:80/",
            "http://a b/",
            "http://[::1/",
        ] {
            assert!(
                matches!(policy.check_url(bad), Err(EgressError::BadUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn logs_see_no_userinfo_or_query() {
        assert_eq!(
            redact("https://u:p@h.example:1/a/b.iso?X-Amz-Signature=abc#f"),
            "https://h.example:1/a/b.iso?…"
        );
        assert_eq!(redact("http://h/x"), "http://h/x");
        assert_eq!(redact("http://u@h"), "http://h");
    }
}
