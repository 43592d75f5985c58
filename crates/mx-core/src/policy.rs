//! The knobs a route is computed under: local identity, IP family strategy, limits, static routes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::str::FromStr;

use serde::Serialize;

use crate::CoreError;
use crate::domain::{name_as_ip, normalize_domain};

/// Which address families are tried, and in what order within one exchanger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpStrategy {
    #[default]
    Ipv4ThenIpv6,
    Ipv6ThenIpv4,
    Ipv4Only,
    Ipv6Only,
    /// Interleaved, IPv6 first (RFC 8305 style).
    Any,
}

impl IpStrategy {
    pub fn wants_ipv4(self) -> bool {
        self != IpStrategy::Ipv6Only
    }
    pub fn wants_ipv6(self) -> bool {
        self != IpStrategy::Ipv4Only
    }
    pub fn as_str(self) -> &'static str {
        match self {
            IpStrategy::Ipv4ThenIpv6 => "ipv4_then_ipv6",
            IpStrategy::Ipv6ThenIpv4 => "ipv6_then_ipv4",
            IpStrategy::Ipv4Only => "ipv4_only",
            IpStrategy::Ipv6Only => "ipv6_only",
            IpStrategy::Any => "any",
        }
    }
}

impl FromStr for IpStrategy {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.replace('-', "_").as_str() {
            "ipv4_then_ipv6" => IpStrategy::Ipv4ThenIpv6,
            "ipv6_then_ipv4" => IpStrategy::Ipv6ThenIpv4,
            "ipv4_only" => IpStrategy::Ipv4Only,
            "ipv6_only" => IpStrategy::Ipv6Only,
            "any" => IpStrategy::Any,
            _ => return Err(CoreError::InvalidIpStrategy(s.to_string())),
        })
    }
}

/// A configured route that replaces MX lookup for one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StaticRoute {
    /// `[192.0.2.1]:2525`: straight to an address.
    Address { ip: IpAddr, port: Option<u16> },
    /// `smarthost.example.net:587`: resolved like an MX target.
    Host { name: String, port: Option<u16> },
}

impl FromStr for StaticRoute {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| CoreError::InvalidStaticRoute {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let parse_port = |p: &str| p.parse::<u16>().map_err(|_| invalid("bad port"));
        if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| invalid("missing ']'"))?;
            let ip = inside
                .strip_prefix("IPv6:")
                .unwrap_or(inside)
                .parse::<IpAddr>()
                .map_err(|_| invalid("not an IP address inside brackets"))?;
            let port = match after {
                "" => None,
                p => Some(parse_port(
                    p.strip_prefix(':')
                        .ok_or_else(|| invalid("expected :port"))?,
                )?),
            };
            return Ok(StaticRoute::Address { ip, port });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p)?)),
            None => (s, None),
        };
        if name_as_ip(host).is_some() {
            return Err(invalid("write an address as [ip] or [ip]:port"));
        }
        let name = normalize_domain(host).map_err(|e| invalid(&e.to_string()))?;
        Ok(StaticRoute::Host { name, port })
    }
}

/// Everything a route depends on besides DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub ip_strategy: IpStrategy,
    /// Our own host names (normalised): an exchanger with one of these names is us.
    pub local_names: Vec<String>,
    /// Our own addresses: an exchanger resolving to one of these is us.
    pub local_addresses: Vec<IpAddr>,
    /// Use exchanges written as IP addresses (`MX 10 192.0.2.1.`) instead of refusing them.
    pub allow_mx_to_ip: bool,
    /// How many addresses a route offers before it is cut (a backup level always keeps one).
    pub mx_address_limit: usize,
    /// Domain (normalised) to route, replacing MX lookup.
    pub static_routes: BTreeMap<String, StaticRoute>,
    /// Negative answers are cached for the SOA negative TTL, but never longer than this.
    pub negative_ttl_cap: u32,
    /// How long a `tempfail` route may be cached (0: not at all).
    pub tempfail_ttl: u32,
    /// CNAME hops followed before giving up with `cname_loop`.
    pub max_cname_hops: usize,
    /// Port of the attempts made from DNS (25 for the real world; the lab uses others).
    pub smtp_port: u16,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ip_strategy: IpStrategy::default(),
            local_names: Vec::new(),
            local_addresses: Vec::new(),
            allow_mx_to_ip: false,
            mx_address_limit: 5,
            static_routes: BTreeMap::new(),
            negative_ttl_cap: 300,
            tempfail_ttl: 30,
            max_cname_hops: 8,
            smtp_port: 25,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_2_static_route_forms() {
        assert_eq!(
            "[192.0.2.7]:2525".parse::<StaticRoute>().unwrap(),
            StaticRoute::Address {
                ip: "192.0.2.7".parse().unwrap(),
                port: Some(2525)
            }
        );
        assert_eq!(
            "[IPv6:2001:db8::7]".parse::<StaticRoute>().unwrap(),
            StaticRoute::Address {
                ip: "2001:db8::7".parse().unwrap(),
                port: None
            }
        );
        assert_eq!(
            "Smart.Example.NET:587".parse::<StaticRoute>().unwrap(),
            StaticRoute::Host {
                name: "smart.example.net".into(),
                port: Some(587)
            }
        );
        assert!("192.0.2.7".parse::<StaticRoute>().is_err());
        assert!("[192.0.2.7]:x".parse::<StaticRoute>().is_err());
    }

    #[test]
    fn ip_strategy_names_round_trip() {
        for s in [
            IpStrategy::Ipv4ThenIpv6,
            IpStrategy::Ipv6ThenIpv4,
            IpStrategy::Ipv4Only,
            IpStrategy::Ipv6Only,
            IpStrategy::Any,
        ] {
            assert_eq!(s.as_str().parse::<IpStrategy>().unwrap(), s);
        }
        assert!("v4".parse::<IpStrategy>().is_err());
    }
}
