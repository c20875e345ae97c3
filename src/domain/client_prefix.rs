//! The part of a client's address that limits per address count: the whole
//! address for IPv4, the /64 for IPv6 (one host is commonly given a whole
//! /64 and can pick any address in it, so counting single IPv6 addresses
//! would bound nothing).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// An IPv4 address or an IPv6 /64, as the limits on `register`, on
/// one-time codes and on connections per address count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientPrefix(IpAddr);

impl ClientPrefix {
    /// The prefix `peer` counts under. An IPv4 address seen through an IPv6
    /// socket (`::ffff:a.b.c.d`) counts as the IPv4 address it is, not as
    /// part of the one /64 every such address shares.
    pub fn of(peer: IpAddr) -> Self {
        match peer.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            v4 => Self(v4),
        }
    }
}

impl fmt::Display for ClientPrefix {
    /// `192.0.2.7/32` or `2001:db8:1:2::/64`: the form stored with pending
    /// codes, readable by an operator looking at the table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}/32"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(s: &str) -> String {
        ClientPrefix::of(s.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv4_counts_whole_ipv6_by_its_64() {
        assert_eq!(prefix("192.0.2.7"), "192.0.2.7/32");
        assert_eq!(
            prefix("2001:db8:1:2:aaaa:bbbb:cccc:dddd"),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            ClientPrefix::of("2001:db8:1:2::1".parse().unwrap()),
            ClientPrefix::of("2001:db8:1:2:ffff::9".parse().unwrap()),
        );
        assert_ne!(
            ClientPrefix::of("2001:db8:1:2::1".parse().unwrap()),
            ClientPrefix::of("2001:db8:1:3::1".parse().unwrap()),
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(prefix("::ffff:192.0.2.7"), "192.0.2.7/32");
        assert_ne!(prefix("::ffff:192.0.2.7"), prefix("::ffff:192.0.2.8"));
    }
}
