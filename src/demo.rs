//! `egresslens demo`: the pipeline on a simulated mesh, no cluster needed. Waypoint traffic
//! with incidents from [`crate::traffic`] (an unregistered and a blocked host, TLS origination
//! dropped and failing halfway, ztunnel connections around a waypoint), a mesh configuration
//! in which one waypoint has no ready pod, and the saved answers of two probes (one through
//! the waypoint, one straight from the origin), so the report shows every finding kind.

use std::collections::BTreeMap;

use crate::findings;
use crate::ingest::{self, IngestConfig, ReadError};
use crate::mesh::{self, DestinationRule, HostPosture, MeshConfig, SePort, ServiceEntry, Waypoint};
use crate::probe::{Classified, parse_blocks, proxy_servers};
use crate::source::Input;
use crate::stats::EgressStats;
use crate::traffic::{BYPASSED, GenConfig, TLS_DROPPED, TLS_FAILING, Truth, generate, host_name};

/// Where the simulated probes were sent from.
pub const PROBE_SOURCE: &str = "shop/checkout";

/// What the demo ran and found.
#[derive(Debug)]
pub struct Demo {
    pub truth: Truth,
    /// Findings from the mesh view and the probes included.
    pub stats: EgressStats,
    pub posture: Vec<HostPosture>,
    pub probes: Vec<Classified>,
}

/// Runs the demo over `lines` simulated records.
pub fn run(lines: u64, seed: u64) -> Result<Demo, ReadError> {
    let config = GenConfig { lines, seed, bad: 0.01, incidents: true, ..GenConfig::default() };
    let mut bytes = Vec::with_capacity(lines as usize * 900);
    let truth = generate(&config, &mut bytes)
        .map_err(|source| ReadError { name: "the simulated traffic".to_owned(), source })?;
    let input = Input::Memory { name: "demo".to_owned(), bytes: bytes.into() };
    let mut ingest_config = IngestConfig::default();
    ingest_config.stats.track_windows = false;
    let mut stats = ingest::stats(&[input], &ingest_config)?;
    // The mesh is looked at and the probes are sent when the log ends.
    let now = stats.latest_ns.unwrap_or(config.start_ns);
    let posture = mesh::posture(&mesh_config());
    for host in &posture {
        if let Some(evidence) = findings::from_posture(host, now) {
            stats.findings.note(evidence, "mesh");
        }
    }
    let probes = parse_blocks(&probe_answers(), &proxy_servers(&[]));
    for probe in &probes {
        let summary = probe.summary();
        if let Some(evidence) = findings::from_probe(probe, PROBE_SOURCE, now, summary.as_bytes()) {
            stats.findings.note(evidence, "probe");
        }
    }
    Ok(Demo { truth, stats, posture, probes })
}

/// What `curl -sI http://HOST` answered in the workload: aliyun.com through the waypoint, the
/// bypassed host straight from its origin.
fn probe_answers() -> String {
    format!(
        "### aliyun.com\nHTTP/1.1 301 Moved Permanently\nserver: istio-envoy\n\
         location: https://aliyun.com/\nx-envoy-upstream-service-time: 23\n\n\
         ### {}\nHTTP/1.1 404 Not Found\nServer: Tengine\nContent-Type: text/html\n",
        host_name(BYPASSED)
    )
}

/// The simulated mesh: namespace `egress` uses waypoint `egress/waypoint` (two ready pods) for
/// aliyun.com (TLS originated), the host whose DestinationRule was deleted halfway and the
/// host whose certificate fails; namespace `partners` uses `partners/waypoint`, whose one pod
/// is not ready, for the host ztunnel then sends straight out.
fn mesh_config() -> MeshConfig {
    let entry = |namespace: &str, host: String, vip: &str| ServiceEntry {
        namespace: namespace.to_owned(),
        name: host.replace('.', "-"),
        hosts: vec![host],
        addresses: Vec::new(),
        ports: vec![SePort {
            number: 80,
            name: "http".to_owned(),
            protocol: "HTTP".to_owned(),
            target_port: Some(443),
        }],
        resolution: "DNS".to_owned(),
        location: "MESH_EXTERNAL".to_owned(),
        status_addresses: vec![vip.to_owned()],
        use_waypoint: None,
        use_waypoint_namespace: None,
    };
    let rule = |host: String| DestinationRule {
        namespace: "egress".to_owned(),
        name: host.replace('.', "-"),
        host,
        tls: None,
        port_tls: BTreeMap::from([(80, "SIMPLE".to_owned())]),
    };
    let waypoint = |namespace: &str, ready_pods| Waypoint {
        namespace: namespace.to_owned(),
        name: "waypoint".to_owned(),
        waypoint_for: "service".to_owned(),
        pods: 2,
        ready_pods,
    };
    MeshConfig {
        service_entries: vec![
            entry("egress", host_name(0), "240.240.0.1"),
            entry("egress", host_name(TLS_DROPPED), "240.240.0.2"),
            entry("egress", host_name(TLS_FAILING), "240.240.0.3"),
            entry("partners", host_name(BYPASSED), "240.240.0.4"),
        ],
        destination_rules: vec![
            rule(host_name(0)),
            rule(host_name(TLS_FAILING)),
            rule(host_name(BYPASSED)),
        ],
        waypoints: vec![waypoint("egress", 2), waypoint("partners", 0)],
        namespace_waypoints: BTreeMap::from([
            ("egress".to_owned(), "waypoint".to_owned()),
            ("partners".to_owned(), "waypoint".to_owned()),
        ]),
        warnings: Vec::new(),
    }
}
