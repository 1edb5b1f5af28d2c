//! Columns Envoy does not print but operators ask for: what kind of upstream cluster served the
//! request, the service port the client called, the port the waypoint really connected to, and
//! whether the waypoint originated TLS (the walkthrough's Step 4: port 80 mapped to 443).

use std::borrow::Cow;
use std::net::IpAddr;

/// Splits at the first `byte` (ASCII). A plain loop: these strings are short and split for
/// every record, where `str::split_once`'s searcher set-up costs more than the search.
#[inline]
pub fn split_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = s.bytes().position(|b| b == byte)?;
    Some((&s[..i], &s[i + 1..]))
}

/// Splits at the last `byte` (ASCII); see [`split_at_byte`].
#[inline]
pub fn rsplit_at_byte(s: &str, byte: u8) -> Option<(&str, &str)> {
    let i = s.bytes().rposition(|b| b == byte)?;
    Some((&s[..i], &s[i + 1..]))
}

/// Envoy's `upstream_cluster`, split. Istio names clusters `direction|port|subset|host`
/// (`inbound-vip|80|http|aliyun.com` on a waypoint, `outbound|443||www.google.com` on a sidecar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterName<'a> {
    pub kind: &'static str,
    pub port: Option<u16>,
    pub host: Option<&'a str>,
}

impl<'a> ClusterName<'a> {
    pub fn parse(name: &'a str) -> Option<Self> {
        let name = name.strip_suffix(';').unwrap_or(name);
        if name.is_empty() {
            return None;
        }
        let (direction, rest) = split_at_byte(name, b'|').unwrap_or((name, ""));
        let kind = match direction {
            "inbound-vip" => "inbound-vip",
            "outbound" => "outbound",
            "PassthroughCluster"
            | "InboundPassthroughClusterIpv4"
            | "InboundPassthroughClusterIpv6"
            | "InboundPassthroughCluster" => "passthrough",
            "BlackHoleCluster" => "blackhole",
            _ => "other",
        };
        let (port, rest) = split_at_byte(rest, b'|').unwrap_or((rest, ""));
        let host = split_at_byte(rest, b'|').map(|(_subset, host)| host).filter(|h| !h.is_empty());
        Some(ClusterName { kind, port: port.parse().ok(), host })
    }
}

/// Strips a trailing `:port` from an authority, and the brackets of an IPv6 literal.
pub fn host_without_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return split_at_byte(rest, b']').map_or(authority, |(host, _)| host);
    }
    match rsplit_at_byte(authority, b':') {
        // More than one colon and no brackets: a bare IPv6 address, not host:port.
        Some((host, port))
            if !host.bytes().any(|b| b == b':') && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => authority,
    }
}

/// The host of an authority as a stats key: port stripped, lower-cased (DNS names are
/// case-insensitive); allocates only when there was upper case.
pub fn normalize_authority(authority: Cow<'_, str>) -> Option<Cow<'_, str>> {
    let host = match authority {
        Cow::Borrowed(s) => Cow::Borrowed(host_without_port(s)),
        Cow::Owned(s) => Cow::Owned(host_without_port(&s).to_owned()),
    };
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(Cow::Owned(host.to_ascii_lowercase()));
    }
    Some(host)
}

/// The port of `ip:port`, `[v6]:port` or `envoy://connect_originate/ip:port`.
pub fn port_of(address: &str) -> Option<u16> {
    let (_, port) = rsplit_at_byte(address, b':')?;
    port.parse().ok()
}

/// The host part of `ip:port` or `[v6]:port`, unchecked: cheap enough for every record.
pub fn host_of_address(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return split_at_byte(rest, b']').map_or(address, |(host, _)| host);
    }
    match rsplit_at_byte(address, b':') {
        Some((host, _)) if !host.bytes().any(|b| b == b':') => host,
        _ => address,
    }
}

/// The IP of `ip:port`, `[v6]:port` or a bare IP; `None` for anything that is not an IP
/// (redacted values, `envoy://` internal addresses).
pub fn ip_of(address: &str) -> Option<&str> {
    let host = if let Some(rest) = address.strip_prefix('[') {
        split_at_byte(rest, b']')?.0
    } else if address.parse::<IpAddr>().is_ok() {
        address
    } else {
        rsplit_at_byte(address, b':')?.0
    };
    host.parse::<IpAddr>().is_ok().then_some(host)
}

/// The waypoint originated TLS when the client called the service's port 80 and the waypoint
/// connected upstream to 443 (ServiceEntry `targetPort: 443` plus a DestinationRule with
/// `tls.mode: SIMPLE`).
pub fn tls_originated(service_port: Option<u16>, upstream_port: Option<u16>) -> bool {
    service_port == Some(80) && upstream_port == Some(443)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_split_into_kind_port_host() {
        let cases = [
            ("inbound-vip|80|http|aliyun.com;", "inbound-vip", Some(80), Some("aliyun.com")),
            ("outbound|443||www.google.com", "outbound", Some(443), Some("www.google.com")),
            (
                "outbound|443|wildcard|egw.istio-egress",
                "outbound",
                Some(443),
                Some("egw.istio-egress"),
            ),
            ("inbound|8000||", "other", Some(8000), None),
            ("PassthroughCluster", "passthrough", None, None),
            ("InboundPassthroughClusterIpv4", "passthrough", None, None),
            ("BlackHoleCluster", "blackhole", None, None),
            ("dynamic_forward_proxy_cluster", "other", None, None),
        ];
        for (name, kind, port, host) in cases {
            assert_eq!(ClusterName::parse(name), Some(ClusterName { kind, port, host }), "{name}");
        }
        assert_eq!(ClusterName::parse(";"), None);
    }

    #[test]
    fn authorities_lose_port_and_case() {
        for (input, want) in [
            ("aliyun.com", "aliyun.com"),
            ("httpbin:8000", "httpbin"),
            ("API.GitHub.com:80", "api.github.com"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("172.18.0.101", "172.18.0.101"),
        ] {
            assert_eq!(normalize_authority(input.into()).as_deref(), Some(want), "{input}");
        }
        assert_eq!(normalize_authority(":80".into()), None);
    }

    #[test]
    fn addresses_give_ports_and_ips() {
        assert_eq!(port_of("140.205.135.3:80"), Some(80));
        assert_eq!(port_of("[2001:db8::1]:443"), Some(443));
        assert_eq!(port_of("envoy://connect_originate/10.244.0.22:9080"), Some(9080));
        assert_eq!(port_of("envoy://sni_listener/"), None);
        assert_eq!(ip_of("172.16.5.26:33356"), Some("172.16.5.26"));
        assert_eq!(ip_of("[fd00::5]:33356"), Some("fd00::5"));
        assert_eq!(ip_of("10.0.0.1"), Some("10.0.0.1"));
        assert_eq!(ip_of("REDACTED_IP2:45621"), None);
        assert_eq!(ip_of("envoy://internal_client_address/"), None);
    }

    #[test]
    fn tls_origination_needs_80_to_443() {
        assert!(tls_originated(Some(80), Some(443)));
        assert!(!tls_originated(Some(80), Some(80)));
        assert!(!tls_originated(Some(443), Some(443)));
        assert!(!tls_originated(None, Some(443)));
    }
}
