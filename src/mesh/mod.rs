//! The mesh's egress configuration and the posture it gives each registered external host.
//!
//! Read from the API ([`fetch`]): ServiceEntries (hosts, addresses, ports with `targetPort`,
//! resolution, location, `status.addresses`, the `istio.io/use-waypoint` label),
//! DestinationRules (TLS mode per port), waypoint Gateways (class `istio-waypoint`) with their
//! ready pods, and the namespaces' `istio.io/use-waypoint` labels. [`posture`] decides, per
//! host, which waypoint serves it, whether the waypoint originates TLS (plain port 80 sent to
//! 443), and the problems that let traffic bypass the waypoint or fail.
//!
//! Istio's rules as applied here: a ServiceEntry's own `istio.io/use-waypoint` label wins over
//! its namespace's (`none` opts out); the waypoint lives in the ServiceEntry's namespace unless
//! `istio.io/use-waypoint-namespace` names another; a waypoint serves ServiceEntries only when
//! its `istio.io/waypoint-for` is `service` (the default) or `all`; ztunnel sends a host's
//! traffic to the waypoint by the host's address, so a DNS host needs one (`spec.addresses`, or
//! the VIP Istio allocates into `status.addresses`).

pub mod fetch;
pub mod watch;

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const USE_WAYPOINT_NAMESPACE: &str = "istio.io/use-waypoint-namespace";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
pub const WAYPOINT_CLASS: &str = "istio-waypoint";

/// One port of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SePort {
    pub number: u16,
    pub name: String,
    pub protocol: String,
    pub target_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    pub hosts: Vec<String>,
    pub addresses: Vec<String>,
    pub ports: Vec<SePort>,
    pub resolution: String,
    pub location: String,
    /// Addresses Istio allocated (`status.addresses[].value`).
    pub status_addresses: Vec<String>,
    pub use_waypoint: Option<String>,
    pub use_waypoint_namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationRule {
    pub namespace: String,
    pub name: String,
    pub host: String,
    /// `trafficPolicy.tls.mode`.
    pub tls: Option<String>,
    /// `trafficPolicy.portLevelSettings[].tls.mode` by port number.
    pub port_tls: BTreeMap<u16, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waypoint {
    pub namespace: String,
    pub name: String,
    /// `istio.io/waypoint-for`: `service` (the default), `workload`, `all` or `none`.
    pub waypoint_for: String,
    pub pods: usize,
    pub ready_pods: usize,
}

/// Everything the posture is decided from.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MeshConfig {
    pub service_entries: Vec<ServiceEntry>,
    pub destination_rules: Vec<DestinationRule>,
    pub waypoints: Vec<Waypoint>,
    /// Each namespace's `istio.io/use-waypoint` label, when it has one.
    pub namespace_waypoints: BTreeMap<String, String>,
    /// What could not be read in full (objects past the limit, an API not served).
    pub warnings: Vec<String>,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map_or_else(Vec::new, |items| {
        items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
    })
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn label(object: &Value, key: &str) -> Option<String> {
    object["metadata"]["labels"][key].as_str().map(str::to_owned)
}

fn port_number(value: &Value) -> Option<u16> {
    value.as_u64().and_then(|n| u16::try_from(n).ok())
}

impl ServiceEntry {
    /// From the API's JSON object (any served version: the fields read are the same).
    pub fn from_object(object: &Value) -> ServiceEntry {
        let spec = &object["spec"];
        let ports = spec["ports"].as_array().map_or_else(Vec::new, |ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some(SePort {
                        number: port_number(&p["number"])?,
                        name: text(&p["name"]),
                        protocol: text(&p["protocol"]),
                        target_port: port_number(&p["targetPort"]),
                    })
                })
                .collect()
        });
        let status_addresses =
            object["status"]["addresses"].as_array().map_or_else(Vec::new, |a| {
                a.iter().filter_map(|a| a["value"].as_str().map(str::to_owned)).collect()
            });
        ServiceEntry {
            namespace: text(&object["metadata"]["namespace"]),
            name: text(&object["metadata"]["name"]),
            hosts: strings(&spec["hosts"]),
            addresses: strings(&spec["addresses"]),
            ports,
            resolution: spec["resolution"].as_str().unwrap_or("NONE").to_owned(),
            location: spec["location"].as_str().unwrap_or("MESH_EXTERNAL").to_owned(),
            status_addresses,
            use_waypoint: label(object, USE_WAYPOINT),
            use_waypoint_namespace: label(object, USE_WAYPOINT_NAMESPACE),
        }
    }
}

impl DestinationRule {
    pub fn from_object(object: &Value) -> DestinationRule {
        let policy = &object["spec"]["trafficPolicy"];
        let port_tls = policy["portLevelSettings"].as_array().map_or_else(BTreeMap::new, |ports| {
            ports
                .iter()
                .filter_map(|p| {
                    Some((
                        port_number(&p["port"]["number"])?,
                        p["tls"]["mode"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        });
        DestinationRule {
            namespace: text(&object["metadata"]["namespace"]),
            name: text(&object["metadata"]["name"]),
            host: text(&object["spec"]["host"]),
            tls: policy["tls"]["mode"].as_str().map(str::to_owned),
            port_tls,
        }
    }

    /// The TLS mode this rule sets for `port`: its port-level setting, else its default.
    fn tls_for(&self, port: u16) -> Option<&str> {
        self.port_tls.get(&port).or(self.tls.as_ref()).map(String::as_str)
    }
}

/// Whether a DestinationRule's host names `host` (exactly, or by a `*.` wildcard).
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// TLS modes in which the waypoint opens TLS to the destination itself.
fn originates(mode: &str) -> bool {
    matches!(mode, "SIMPLE" | "MUTUAL")
}

/// What posture a registered host has on one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortPosture {
    pub port: u16,
    pub protocol: String,
    /// Where the waypoint sends it (the port itself when no `targetPort`).
    pub target_port: u16,
    /// The DestinationRule TLS mode for this port, if any.
    pub tls_mode: Option<String>,
    /// The waypoint originates TLS: plain from the workload, encrypted to the destination.
    pub tls_origination: bool,
}

/// Kinds of problems, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// No waypoint is asked for: ztunnel passes the traffic through, unobserved.
    NoWaypoint,
    /// The waypoint asked for does not exist.
    WaypointMissing,
    /// The waypoint exists but no pod of it is ready.
    WaypointNotReady,
    /// The waypoint does not take service traffic (`istio.io/waypoint-for`).
    WaypointNotForServices,
    /// A DNS host without an address ztunnel could capture it by.
    NoAddress,
    /// TLS origination set up on one side only: plain text to a TLS port, or TLS to a plain
    /// one.
    TlsHalfConfigured,
    /// A DestinationRule for a port the ServiceEntry does not declare.
    TlsPortUnknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

/// One registered host's egress posture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostPosture {
    pub host: String,
    pub namespace: String,
    pub service_entry: String,
    pub location: String,
    pub resolution: String,
    pub addresses: Vec<String>,
    pub ports: Vec<PortPosture>,
    /// `<namespace>/<name>` of the waypoint that serves the host.
    pub waypoint: Option<String>,
    pub waypoint_ready_pods: Option<usize>,
    pub waypoint_pods: Option<usize>,
    /// `<namespace>/<name>` of the DestinationRule applied.
    pub destination_rule: Option<String>,
    pub problems: Vec<Problem>,
}

/// The DestinationRule for `host` as seen from `namespace`: one in that namespace first, else
/// any other (Istio's export rules make others visible by default).
fn rule_for<'a>(
    rules: &'a [DestinationRule],
    host: &str,
    namespace: &str,
) -> Option<&'a DestinationRule> {
    let matching = || rules.iter().filter(|r| host_matches(&r.host, host));
    matching().find(|r| r.namespace == namespace).or_else(|| matching().next())
}

/// The posture of every host of every MESH_EXTERNAL ServiceEntry, sorted by host.
pub fn posture(mesh: &MeshConfig) -> Vec<HostPosture> {
    let mut hosts = Vec::new();
    for entry in mesh.service_entries.iter().filter(|e| e.location != "MESH_INTERNAL") {
        let waypoint_name = entry
            .use_waypoint
            .as_ref()
            .or_else(|| mesh.namespace_waypoints.get(&entry.namespace))
            .filter(|name| name.as_str() != "none");
        let waypoint_namespace = entry.use_waypoint_namespace.as_ref().unwrap_or(&entry.namespace);
        let waypoint = waypoint_name.and_then(|name| {
            mesh.waypoints.iter().find(|w| &w.name == name && &w.namespace == waypoint_namespace)
        });
        for host in &entry.hosts {
            let mut problems = Vec::new();
            let rule = rule_for(&mesh.destination_rules, host, &entry.namespace);
            match (waypoint_name, waypoint) {
                (None, _) => problems.push(Problem {
                    kind: ProblemKind::NoWaypoint,
                    message: format!(
                        "{host} is registered in namespace {} but neither the namespace nor the \
                         ServiceEntry is labelled {USE_WAYPOINT}: its traffic bypasses every \
                         waypoint",
                        entry.namespace
                    ),
                }),
                (Some(name), None) => problems.push(Problem {
                    kind: ProblemKind::WaypointMissing,
                    message: format!(
                        "{host} should go through waypoint {waypoint_namespace}/{name}, which \
                         does not exist (no Gateway of class {WAYPOINT_CLASS} by that name)"
                    ),
                }),
                (Some(_), Some(w)) => {
                    if w.ready_pods == 0 {
                        problems.push(Problem {
                            kind: ProblemKind::WaypointNotReady,
                            message: format!(
                                "waypoint {}/{} has no ready pod ({} in all): {host} cannot \
                                 be reached through it",
                                w.namespace, w.name, w.pods
                            ),
                        });
                    }
                    if !matches!(w.waypoint_for.as_str(), "service" | "all") {
                        problems.push(Problem {
                            kind: ProblemKind::WaypointNotForServices,
                            message: format!(
                                "waypoint {}/{} is {WAYPOINT_FOR}={}: it does not take the \
                                 traffic of ServiceEntries such as {host}",
                                w.namespace, w.name, w.waypoint_for
                            ),
                        });
                    }
                }
            }
            let dns = entry.resolution == "DNS" || entry.resolution == "DNS_ROUND_ROBIN";
            if waypoint_name.is_some()
                && dns
                && !host.starts_with('*')
                && entry.addresses.is_empty()
                && entry.status_addresses.is_empty()
            {
                problems.push(Problem {
                    kind: ProblemKind::NoAddress,
                    message: format!(
                        "{host} has no address (spec.addresses is empty and Istio allocated \
                         none into status.addresses): ztunnel cannot tell its traffic apart, \
                         so it goes direct"
                    ),
                });
            }
            let mut ports = Vec::new();
            for port in &entry.ports {
                let tls_mode = rule.and_then(|r| r.tls_for(port.number)).map(str::to_owned);
                let target_port = port.target_port.unwrap_or(port.number);
                let plain = matches!(port.protocol.as_str(), "HTTP" | "HTTP2" | "GRPC" | "TCP");
                let tls_origination = plain && tls_mode.as_deref().is_some_and(originates);
                if plain && target_port == 443 && !tls_origination {
                    problems.push(Problem {
                        kind: ProblemKind::TlsHalfConfigured,
                        message: format!(
                            "port {} of {host} is sent to {target_port} but no DestinationRule \
                             sets tls SIMPLE for it: the waypoint speaks plain {} to a TLS port",
                            port.number, port.protocol
                        ),
                    });
                }
                if tls_origination && target_port == port.number && port.number == 80 {
                    problems.push(Problem {
                        kind: ProblemKind::TlsHalfConfigured,
                        message: format!(
                            "the DestinationRule originates TLS on port 80 of {host}, but the \
                             ServiceEntry has no targetPort: 443 for it, so TLS goes to port 80"
                        ),
                    });
                }
                ports.push(PortPosture {
                    port: port.number,
                    protocol: port.protocol.clone(),
                    target_port,
                    tls_mode,
                    tls_origination,
                });
            }
            if let Some(rule) = rule {
                for port in rule.port_tls.keys() {
                    if !entry.ports.iter().any(|p| p.number == *port) {
                        problems.push(Problem {
                            kind: ProblemKind::TlsPortUnknown,
                            message: format!(
                                "DestinationRule {}/{} sets TLS for port {port} of {host}, which \
                                 the ServiceEntry does not declare: the setting never applies",
                                rule.namespace, rule.name
                            ),
                        });
                    }
                }
            }
            problems.sort_by_key(|p| p.kind);
            let mut addresses = entry.addresses.clone();
            addresses.extend(entry.status_addresses.iter().cloned());
            hosts.push(HostPosture {
                host: host.clone(),
                namespace: entry.namespace.clone(),
                service_entry: entry.name.clone(),
                location: entry.location.clone(),
                resolution: entry.resolution.clone(),
                addresses,
                ports,
                waypoint: waypoint_name.map(|n| format!("{waypoint_namespace}/{n}")),
                waypoint_ready_pods: waypoint.map(|w| w.ready_pods),
                waypoint_pods: waypoint.map(|w| w.pods),
                destination_rule: rule.map(|r| format!("{}/{}", r.namespace, r.name)),
                problems,
            });
        }
    }
    hosts.sort_by(|a, b| (&a.host, &a.namespace).cmp(&(&b.host, &b.namespace)));
    hosts
}

/// `80→443/HTTP tls:SIMPLE`, `443/HTTPS`.
fn port_text(port: &PortPosture) -> String {
    let mut text = port.port.to_string();
    if port.target_port != port.port {
        text.push_str(&format!("→{}", port.target_port));
    }
    text.push('/');
    text.push_str(&port.protocol);
    if let Some(mode) = &port.tls_mode {
        text.push_str(&format!(" tls:{mode}"));
    }
    text
}

/// The posture as a table for people, then every problem in full.
pub fn write_table(
    hosts: &[HostPosture],
    mesh: &MeshConfig,
    out: &mut impl Write,
) -> io::Result<()> {
    let rows: Vec<[String; 5]> = hosts
        .iter()
        .map(|h| {
            let ports: Vec<String> = h.ports.iter().map(port_text).collect();
            let waypoint = match (&h.waypoint, h.waypoint_ready_pods, h.waypoint_pods) {
                (Some(w), Some(ready), Some(all)) => format!("{w} ({ready}/{all} ready)"),
                (Some(w), _, _) => format!("{w} (missing)"),
                (None, ..) => "-".to_owned(),
            };
            let problems: Vec<&str> = h.problems.iter().map(|p| p.kind.as_str()).collect();
            let problems = if problems.is_empty() { "ok".to_owned() } else { problems.join(",") };
            [h.host.clone(), h.namespace.clone(), ports.join(", "), waypoint, problems]
        })
        .collect();
    let header = ["HOST", "NAMESPACE", "PORTS", "WAYPOINT", "POSTURE"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5], out: &mut dyn Write| -> io::Result<()> {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                text.push_str(&format!("{cell}{}  ", " ".repeat(pad)));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(header, out)?;
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4]], out)?;
    }
    if hosts.is_empty() {
        writeln!(out, "(no ServiceEntry registers an external host)")?;
    }
    let problems: Vec<&Problem> = hosts.iter().flat_map(|h| &h.problems).collect();
    if !problems.is_empty() {
        writeln!(out, "\nProblems:")?;
        for problem in problems {
            writeln!(out, "- [{}] {}", problem.kind.as_str(), problem.message)?;
        }
    }
    for warning in &mesh.warnings {
        writeln!(out, "\nwarning: {warning}")?;
    }
    Ok(())
}

impl ProblemKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::NoWaypoint => "no_waypoint",
            ProblemKind::WaypointMissing => "waypoint_missing",
            ProblemKind::WaypointNotReady => "waypoint_not_ready",
            ProblemKind::WaypointNotForServices => "waypoint_not_for_services",
            ProblemKind::NoAddress => "no_address",
            ProblemKind::TlsHalfConfigured => "tls_half_configured",
            ProblemKind::TlsPortUnknown => "tls_port_unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The walkthrough's final state: aliyun.com registered in istio-egress, port 80 sent to
    /// 443, TLS originated by the waypoint.
    fn walkthrough() -> MeshConfig {
        let entry = ServiceEntry::from_object(&json!({
            "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
            "metadata": {"name": "external-svc-aliyun", "namespace": "istio-egress"},
            "spec": {"hosts": ["aliyun.com"], "location": "MESH_EXTERNAL", "resolution": "DNS",
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 443},
                          {"number": 443, "name": "https", "protocol": "HTTPS"}]},
            "status": {"addresses": [{"value": "240.240.0.3", "host": "aliyun.com"}]}
        }));
        let rule = DestinationRule::from_object(&json!({
            "metadata": {"name": "aliyun-com", "namespace": "istio-egress"},
            "spec": {"host": "aliyun.com", "trafficPolicy": {"portLevelSettings": [
                {"port": {"number": 80}, "tls": {"mode": "SIMPLE"}}]}}
        }));
        MeshConfig {
            service_entries: vec![entry],
            destination_rules: vec![rule],
            waypoints: vec![Waypoint {
                namespace: "istio-egress".into(),
                name: "waypoint".into(),
                waypoint_for: "service".into(),
                pods: 1,
                ready_pods: 1,
            }],
            namespace_waypoints: BTreeMap::from([("istio-egress".into(), "waypoint".into())]),
            warnings: Vec::new(),
        }
    }

    fn kinds(mesh: &MeshConfig) -> Vec<ProblemKind> {
        posture(mesh).iter().flat_map(|h| h.problems.iter().map(|p| p.kind)).collect()
    }

    #[test]
    fn the_walkthroughs_end_state_is_clean_and_originates_tls_on_80() {
        let mesh = walkthrough();
        let hosts = posture(&mesh);
        assert_eq!(hosts.len(), 1);
        let host = &hosts[0];
        assert_eq!(host.waypoint.as_deref(), Some("istio-egress/waypoint"));
        assert_eq!(host.destination_rule.as_deref(), Some("istio-egress/aliyun-com"));
        assert_eq!(host.addresses, ["240.240.0.3"]);
        assert!(host.problems.is_empty(), "{:?}", host.problems);
        let port80 = &host.ports[0];
        assert_eq!((port80.target_port, port80.tls_origination), (443, true));
        assert!(!host.ports[1].tls_origination, "HTTPS from the app is passed on");
        let mut table = Vec::new();
        write_table(&hosts, &mesh, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("80→443/HTTP tls:SIMPLE, 443/HTTPS"), "{table}");
        assert!(table.contains("istio-egress/waypoint (1/1 ready)  ok"), "{table}");
    }

    #[test]
    fn each_half_of_tls_origination_alone_is_a_problem() {
        let mut no_rule = walkthrough();
        no_rule.destination_rules.clear();
        assert_eq!(kinds(&no_rule), [ProblemKind::TlsHalfConfigured]);
        let mut no_target = walkthrough();
        no_target.service_entries[0].ports[0].target_port = None;
        assert_eq!(kinds(&no_target), [ProblemKind::TlsHalfConfigured]);
        let mut wrong_port = walkthrough();
        wrong_port.destination_rules[0].port_tls = BTreeMap::from([(8080, "SIMPLE".into())]);
        assert_eq!(
            kinds(&wrong_port),
            [ProblemKind::TlsHalfConfigured, ProblemKind::TlsPortUnknown]
        );
    }

    #[test]
    fn waypoint_problems_are_told_apart() {
        let mut unlabelled = walkthrough();
        unlabelled.namespace_waypoints.clear();
        assert_eq!(kinds(&unlabelled), [ProblemKind::NoWaypoint]);
        let mut opted_out = walkthrough();
        opted_out.service_entries[0].use_waypoint = Some("none".into());
        assert_eq!(kinds(&opted_out), [ProblemKind::NoWaypoint]);
        let mut missing = walkthrough();
        missing.waypoints.clear();
        assert_eq!(kinds(&missing), [ProblemKind::WaypointMissing]);
        let mut down = walkthrough();
        down.waypoints[0].ready_pods = 0;
        down.waypoints[0].waypoint_for = "workload".into();
        assert_eq!(
            kinds(&down),
            [ProblemKind::WaypointNotReady, ProblemKind::WaypointNotForServices]
        );
        let mut elsewhere = walkthrough();
        elsewhere.namespace_waypoints.clear();
        elsewhere.service_entries[0].use_waypoint = Some("egress-wp".into());
        elsewhere.service_entries[0].use_waypoint_namespace = Some("istio-system".into());
        elsewhere.waypoints[0].namespace = "istio-system".into();
        elsewhere.waypoints[0].name = "egress-wp".into();
        let hosts = posture(&elsewhere);
        assert_eq!(hosts[0].waypoint.as_deref(), Some("istio-system/egress-wp"));
        assert!(hosts[0].problems.is_empty());
        let mut no_vip = walkthrough();
        no_vip.service_entries[0].status_addresses.clear();
        assert_eq!(kinds(&no_vip), [ProblemKind::NoAddress]);
    }

    #[test]
    fn wildcard_rules_match_subdomains_only() {
        assert!(host_matches("*.aliyuncs.com", "oss-cn-hangzhou.aliyuncs.com"));
        assert!(!host_matches("*.aliyuncs.com", "aliyuncs.com"));
        assert!(host_matches("Aliyun.com", "aliyun.com"));
    }
}
