//! Which addresses are inside the cluster (pods, services, Istio's ServiceEntry VIPs) and which
//! are external: a ztunnel connection that leaves for an external address without an HBONE
//! hop went around every waypoint.

use std::net::IpAddr;

/// A CIDR block, `10.0.0.0/8` or `fc00::/7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a CIDR block (such as 10.0.0.0/8 or fd00::/8)");
        let (ip, prefix) = text.split_once('/').ok_or_else(bad)?;
        let network: IpAddr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(bad());
        }
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Private (RFC 1918, RFC 4193), carrier-grade NAT, loopback and link-local ranges, and the
/// ranges Istio allocates ServiceEntry VIPs from (`240.240.0.0/16`, `2001:2::/48`): where pods,
/// services and registered hosts' VIPs live in a usual cluster.
pub const DEFAULT_INTERNAL: [&str; 11] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "240.240.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
    "::1/128",
    "2001:2::/48",
];

/// Most ranges an [`InternalRanges`] holds.
pub const MAX_RANGES: usize = 32;

/// The ranges that count as inside the cluster (at most [`MAX_RANGES`], held inline so that
/// configurations holding it stay `Copy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InternalRanges {
    ranges: [Option<Cidr>; MAX_RANGES],
}

impl Default for InternalRanges {
    fn default() -> Self {
        let ranges = DEFAULT_INTERNAL.iter().map(|c| c.parse().expect("a valid CIDR")).collect();
        InternalRanges::new(ranges).expect("the defaults fit")
    }
}

impl InternalRanges {
    /// Refuses more than [`MAX_RANGES`] ranges.
    pub fn new(list: Vec<Cidr>) -> Result<Self, String> {
        if list.len() > MAX_RANGES {
            return Err(format!("at most {MAX_RANGES} internal ranges, not {}", list.len()));
        }
        let mut ranges = [None; MAX_RANGES];
        for (slot, range) in ranges.iter_mut().zip(list) {
            *slot = Some(range);
        }
        Ok(InternalRanges { ranges })
    }

    /// Whether `ip` (text) is outside every range; None when it is not an IP.
    pub fn is_external(&self, ip: &str) -> Option<bool> {
        let ip: IpAddr = ip.parse().ok()?;
        Some(!self.ranges.iter().flatten().any(|range| range.contains(ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_cluster_ranges_are_internal_and_the_internet_is_not() {
        let ranges = InternalRanges::default();
        for ip in [
            "10.244.1.12",
            "172.31.255.1",
            "192.168.0.9",
            "100.64.0.1",
            "240.240.0.3",
            "fd00::5",
            "2001:2::3",
        ] {
            assert_eq!(ranges.is_external(ip), Some(false), "{ip}");
        }
        for ip in ["140.205.135.3", "142.250.191.142", "172.32.0.1", "2606:4700::6810:85e5"] {
            assert_eq!(ranges.is_external(ip), Some(true), "{ip}");
        }
        assert_eq!(ranges.is_external("aliyun.com"), None);
    }

    #[test]
    fn blocks_parse_or_say_why_not() {
        let only: Cidr = "203.0.113.0/24".parse().unwrap();
        let ranges = InternalRanges::new(vec![only]).unwrap();
        assert_eq!(ranges.is_external("203.0.113.77"), Some(false));
        assert_eq!(ranges.is_external("10.0.0.1"), Some(true));
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("not a CIDR block"));
        assert!("10.0.0.0".parse::<Cidr>().is_err());
        assert!(InternalRanges::new(vec![only; MAX_RANGES + 1]).is_err());
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }
}
