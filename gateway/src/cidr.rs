//! IP networks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address), for the
//! proxies the gateway trusts with forwarding headers.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and the number of leading bits that name the network. An IPv4
/// network also holds the IPv4-mapped IPv6 form of its addresses (`::ffff:10.0.0.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is not a prefix length")]
    Prefix(String),
    #[error("prefix length {prefix} is longer than the {bits} bits of the address")]
    TooLong { prefix: u8, bits: u8 },
    #[error("{text:?} has bits set past its prefix length (the network is {network})")]
    HostBits { text: String, network: Cidr },
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ((net, bits), (ip, ip_bits)) = (numeric(self.network), numeric(ip.to_canonical()));
        bits == ip_bits && mask(net, bits, self.prefix) == mask(ip, bits, self.prefix)
    }
}

/// An address as a number, and how many bits it has.
fn numeric(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(ip) => (u32::from(ip).into(), 32),
        IpAddr::V6(ip) => (ip.into(), 128),
    }
}

/// The first `prefix` of the `bits` low bits of `value`.
fn mask(value: u128, bits: u8, prefix: u8) -> u128 {
    match bits - prefix {
        0 => value,
        host if u32::from(host) >= u128::BITS => 0,
        host => value >> host << host,
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `address/prefix`, or one address (a network of one). Bits set past the prefix
    /// are refused rather than silently cleared: `10.0.0.1/8` is a typo more often than not.
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.trim().parse().map_err(|_| CidrError::Address(address.to_string()))?;
        let network = network.to_canonical();
        let (value, bits) = numeric(network);
        let prefix = match prefix {
            None => bits,
            Some(p) => p.trim().parse::<u8>().map_err(|_| CidrError::Prefix(p.to_string()))?,
        };
        if prefix > bits {
            return Err(CidrError::TooLong { prefix, bits });
        }
        let masked = mask(value, bits, prefix);
        if masked != value {
            let network = match network {
                IpAddr::V4(_) => IpAddr::V4(u32::try_from(masked).unwrap_or_default().into()),
                IpAddr::V6(_) => IpAddr::V6(masked.into()),
            };
            return Err(CidrError::HostBits { text: text.to_string(), network: Cidr { network, prefix } });
        }
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_hold_their_addresses_and_no_others() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.0.0")) && net.contains(ip("10.1.255.255")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "the IPv4-mapped form is the same address");
        assert!(!net.contains(ip("10.2.0.1")) && !net.contains(ip("::1")));

        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));

        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));

        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        let host6: Cidr = "::1".parse().unwrap();
        assert!(host6.contains(ip("::1")) && !host6.contains(ip("::2")));
    }

    #[test]
    fn malformed_networks_are_refused_with_the_reason() {
        assert_eq!("10.0.0/8".parse::<Cidr>(), Err(CidrError::Address("10.0.0".into())));
        assert_eq!("10.0.0.0/x".parse::<Cidr>(), Err(CidrError::Prefix("x".into())));
        assert_eq!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::TooLong { prefix: 33, bits: 32 }));
        assert_eq!("::/129".parse::<Cidr>(), Err(CidrError::TooLong { prefix: 129, bits: 128 }));
        let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert_eq!(err.to_string(), r#""10.0.0.1/8" has bits set past its prefix length (the network is 10.0.0.0/8)"#);
        assert!("".parse::<Cidr>().is_err());
    }
}
