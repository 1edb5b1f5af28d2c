//! `egresslens verify HOST`: the walkthrough as one command. (1) a ServiceEntry registers the
//! host and a waypoint with a ready pod serves it; (2) a request from the workload comes back
//! through the waypoint, not straight from the origin; (3) the waypoint logged that request;
//! (4) where the waypoint should originate TLS, that request left it on port 443.
//!
//! Every check runs that can, so one report shows all that is wrong: a probe is sent even to
//! an unregistered host (its `Server: Tengine` is the evidence of step 2). The probe's path
//! carries a query parameter of its own (`?egresslens-verify=<nonce>`), so the waypoint's
//! record of it is told from every other request for the same path.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, LogParams};
use serde::Serialize;

use crate::ingest::now_ns;
use crate::mesh::fetch::{MeshError, fetch, waypoint_pod};
use crate::mesh::{HostPosture, ProblemKind, posture};
use crate::parse::derived::port_of;
use crate::parse::{Projection, frame, parse_message};
use crate::probe::exec::{ExecError, ExecProbe, Workload, resolve};
use crate::probe::http::HttpProbe;
use crate::probe::{Classified, Verdict};
use crate::source::kube::{WAYPOINT_CONTAINER, WAYPOINT_SELECTOR, whole_second};

/// What to verify, from where.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub host: String,
    /// The workload the probe is sent from (`None`: from this process).
    pub from: Option<Workload>,
    /// The namespace of `from`.
    pub namespace: String,
    pub container: Option<String>,
    pub path: String,
    /// For the probe.
    pub timeout: Duration,
    /// How long the waypoint's log is watched for the probe's request.
    pub log_wait: Duration,
    pub proxy_servers: Vec<String>,
}

/// Why verification could not run (as opposed to a check that failed).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read the mesh configuration")]
    Mesh(#[from] MeshError),
    #[error(transparent)]
    Workload(#[from] ExecError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Does not apply (TLS origination not configured), or cannot be checked.
    Skip,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// One step of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub step: u8,
    pub check: &'static str,
    pub status: Status,
    /// What was seen, in words (and the log line, for step 3).
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub host: String,
    /// Where the probe was sent from: `namespace/pod`, or `this process`.
    pub from: String,
    /// No check failed.
    pub passed: bool,
    pub checks: Vec<Check>,
    pub probe: Classified,
}

/// Runs the four checks.
pub async fn verify(
    client: &kube::Client,
    options: &VerifyOptions,
) -> Result<Verification, VerifyError> {
    let mesh = fetch(client, &[]).await?;
    let hosts = posture(&mesh);
    let registered = hosts.iter().find(|h| h.host.eq_ignore_ascii_case(&options.host));
    let mut checks = vec![registration(&options.host, registered)];

    let started_ns = now_ns();
    let separator = if options.path.contains('?') { '&' } else { '?' };
    let path = format!("{}{separator}egresslens-verify={started_ns:x}", options.path);
    let (probe, from) = send_probe(client, options, &path).await?;
    checks.push(answer(&probe));

    let waypoint = registered.and_then(|h| h.waypoint.clone());
    let record = match &waypoint {
        Some(waypoint) => {
            let found = find_record(client, waypoint, options, &path, started_ns).await;
            checks.push(logged(waypoint, &found, options.log_wait));
            found.ok().flatten()
        }
        None => {
            let evidence = "no waypoint serves the host: none could log the request".to_owned();
            checks.push(Check { step: 3, check: LOGGED, status: Status::Fail, evidence });
            None
        }
    };
    checks.push(tls(registered, record.as_ref()));
    let passed = checks.iter().all(|c| c.status != Status::Fail);
    Ok(Verification { host: options.host.clone(), from, passed, checks, probe })
}

const REGISTERED: &str = "a ServiceEntry registers the host and a ready waypoint serves it";
const ANSWERED: &str = "the answer came through the waypoint";
const LOGGED: &str = "the waypoint logged the request";
const TLS: &str = "the waypoint originated TLS (upstream port 443)";

fn registration(host: &str, posture: Option<&HostPosture>) -> Check {
    let check = |status, evidence| Check { step: 1, check: REGISTERED, status, evidence };
    let Some(p) = posture else {
        return check(
            Status::Fail,
            format!("no MESH_EXTERNAL ServiceEntry lists {host}: its traffic leaves unobserved"),
        );
    };
    let entry = format!("ServiceEntry {}/{}", p.namespace, p.service_entry);
    let blocking = [
        ProblemKind::NoWaypoint,
        ProblemKind::WaypointMissing,
        ProblemKind::WaypointNotReady,
        ProblemKind::WaypointNotForServices,
    ];
    if let Some(problem) = p.problems.iter().find(|q| blocking.contains(&q.kind)) {
        return check(Status::Fail, format!("{entry}; {}", problem.message));
    }
    let waypoint = p.waypoint.as_deref().unwrap_or("-");
    let (ready, pods) = (p.waypoint_ready_pods.unwrap_or(0), p.waypoint_pods.unwrap_or(0));
    check(Status::Pass, format!("{entry}; waypoint {waypoint} ({ready}/{pods} pods ready)"))
}

async fn send_probe(
    client: &kube::Client,
    options: &VerifyOptions,
    path: &str,
) -> Result<(Classified, String), VerifyError> {
    let (path, timeout) = (path.to_owned(), options.timeout);
    let proxy_servers = options.proxy_servers.clone();
    match &options.from {
        Some(workload) => {
            let container = options.container.as_deref();
            let target = resolve(client, &options.namespace, workload, container).await?;
            let probe = ExecProbe { path, timeout, proxy_servers };
            let answer = probe.probe(client, &target, &options.host).await;
            Ok((answer, format!("{}/{}", target.namespace, target.pod)))
        }
        None => {
            let probe = HttpProbe { path, timeout, proxy_servers };
            let host = options.host.clone();
            let answer = tokio::task::spawn_blocking(move || probe.probe(&host)).await;
            let answer =
                answer.unwrap_or_else(|e| Classified::failed(&options.host, e.to_string()));
            Ok((answer, "this process".to_owned()))
        }
    }
}

fn answer(probe: &Classified) -> Check {
    let status = match probe.verdict {
        Verdict::ViaWaypoint => Status::Pass,
        Verdict::Direct | Verdict::Error => Status::Fail,
    };
    let what = match probe.verdict {
        Verdict::ViaWaypoint => "through the waypoint",
        Verdict::Direct => "straight from the origin: the request bypassed the waypoint",
        Verdict::Error => "no answer",
    };
    Check { step: 2, check: ANSWERED, status, evidence: format!("{what}; {}", probe.summary()) }
}

/// The waypoint's record of the probe: its line, and its upstream port.
#[derive(Debug, Clone)]
struct Record {
    line: String,
    pod: String,
    upstream_port: Option<u16>,
}

/// Reads the waypoint's pods' logs from just before the probe until its record (the host and
/// the probe's own `path`) shows up, or `log_wait` ends.
async fn find_record(
    client: &kube::Client,
    waypoint: &str,
    options: &VerifyOptions,
    path: &str,
    started_ns: i64,
) -> Result<Option<Record>, String> {
    let (namespace, name) = waypoint.split_once('/').unwrap_or(("default", waypoint));
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(WAYPOINT_SELECTOR))
        .await
        .map_err(|e| format!("cannot list the pods of waypoint {waypoint}: {e}"))?;
    let names: Vec<String> = listed
        .items
        .iter()
        .filter(|p| waypoint_pod(p).is_some_and(|(_, gateway, _)| gateway == name))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    // Clocks differ between here, the node and the waypoint: allow a few seconds.
    let since_ns = started_ns - 5_000_000_000;
    let params = LogParams {
        container: Some(WAYPOINT_CONTAINER.to_owned()),
        since_time: Some(whole_second(since_ns)),
        ..LogParams::default()
    };
    let deadline = Instant::now() + options.log_wait;
    loop {
        for pod in &names {
            let Ok(text) = pods.logs(pod, &params).await else { continue };
            let mut records = text.lines().filter_map(|l| matching(l, &options.host, path));
            if let Some(record) = records.next() {
                return Ok(Some(Record { pod: pod.clone(), ..record }));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The line as a record of the request for `host` and `path`.
fn matching(line: &str, host: &str, path: &str) -> Option<Record> {
    let framed = frame(line.as_bytes());
    let entry = parse_message(framed.msg, Projection::All).ok()?;
    let host_matches = entry.host().is_some_and(|h| h.eq_ignore_ascii_case(host));
    (host_matches && entry.path.as_deref() == Some(path)).then(|| Record {
        line: line.to_owned(),
        pod: String::new(),
        upstream_port: entry.upstream_host.as_deref().and_then(port_of),
    })
}

fn logged(waypoint: &str, found: &Result<Option<Record>, String>, wait: Duration) -> Check {
    let check = |status, evidence| Check { step: 3, check: LOGGED, status, evidence };
    match found {
        Ok(Some(record)) => check(Status::Pass, format!("{}: {}", record.pod, record.line)),
        Ok(None) => check(
            Status::Fail,
            format!("no record of the request in the log of waypoint {waypoint} within {wait:?}"),
        ),
        Err(message) => check(Status::Fail, message.clone()),
    }
}

fn tls(posture: Option<&HostPosture>, record: Option<&Record>) -> Check {
    let check = |status, evidence| Check { step: 4, check: TLS, status, evidence };
    let port = posture.and_then(|p| p.ports.iter().find(|port| port.port == 80));
    let Some(port) = port.filter(|p| p.tls_origination) else {
        return check(Status::Skip, "TLS origination is not configured for port 80".to_owned());
    };
    let mode = port.tls_mode.as_deref().unwrap_or("-");
    let configured = format!("port 80 → {} with TLS {mode}", port.target_port);
    match record.map(|r| r.upstream_port) {
        None => check(Status::Skip, format!("{configured}; no record of the request to check")),
        Some(Some(443)) => check(Status::Pass, format!("{configured}; the request left on :443")),
        Some(Some(other)) => check(
            Status::Fail,
            format!("{configured}; but the request left on :{other}, in plaintext"),
        ),
        Some(None) => check(Status::Fail, format!("{configured}; the record names no upstream")),
    }
}
