//! Findings: what an operator must act on, read from the evidence the logs hold. A request
//! that bypasses the waypoint leaves no waypoint line, so bypass is found in ztunnel's
//! connections (direct to an external address); unregistered and blocked egress in the
//! waypoint's own records (`PassthroughCluster`, `BlackHoleCluster`, no route); a TLS
//! origination that fails in the upstream transport failure; a request that left the waypoint
//! in plaintext for a host whose other requests had TLS originated.
//!
//! `tls_not_originated` needs the host's intent, which one record does not show: its evidence
//! ([`plaintext_upstream`]: a request sent upstream on port 80 for service port 80) is kept
//! apart, and reports promote it only for hosts whose TLS the waypoint originates (`stats`
//! from the traffic itself; `egresslens findings` reads it from the stored records with the
//! mesh's intent too).
//!
//! [`Findings`] deduplicates by (kind, host, source) and is bounded: past its limit new keys
//! are counted, not kept.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::fast::RandomState;

use serde::{Deserialize, Serialize};

use crate::batch::LineContext;
use crate::mesh::{HostPosture, ProblemKind};
use crate::netrange::InternalRanges;
use crate::parse::Entry;
use crate::parse::derived::{ClusterName, host_of_address, port_of};
use crate::parse::time::format_rfc3339_ms;
use crate::parse::ztunnel::Connection;
use crate::probe::{Classified, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A response came straight from the origin (its own `server`, no Envoy header): the
    /// request did not pass the waypoint.
    BypassDirectResponse,
    /// ztunnel sent a mesh workload's connection straight to an external address.
    BypassZtunnelDirect,
    /// Egress to a host the mesh does not register (it went out through passthrough).
    UnregisteredEgress,
    /// Egress the waypoint refused (`BlackHoleCluster`, no healthy upstream).
    BlockedEgress,
    /// A request left the waypoint in plaintext for a host whose TLS the waypoint originates.
    TlsNotOriginated,
    /// The waypoint's TLS handshake with the origin fails.
    TlsOriginationFailing,
    /// A registered host's waypoint has no ready pod: its traffic goes nowhere or around it.
    WaypointNotReady,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::BypassDirectResponse => "bypass_direct_response",
            FindingKind::BypassZtunnelDirect => "bypass_ztunnel_direct",
            FindingKind::UnregisteredEgress => "unregistered_egress",
            FindingKind::BlockedEgress => "blocked_egress",
            FindingKind::TlsNotOriginated => "tls_not_originated",
            FindingKind::TlsOriginationFailing => "tls_origination_failing",
            FindingKind::WaypointNotReady => "waypoint_not_ready",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            FindingKind::UnregisteredEgress | FindingKind::BlockedEgress => Severity::Warning,
            _ => Severity::Critical,
        }
    }

    pub const ALL: [FindingKind; 7] = [
        FindingKind::BypassDirectResponse,
        FindingKind::BypassZtunnelDirect,
        FindingKind::UnregisteredEgress,
        FindingKind::BlockedEgress,
        FindingKind::TlsNotOriginated,
        FindingKind::TlsOriginationFailing,
        FindingKind::WaypointNotReady,
    ];

    /// Its place in [`FindingKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(name: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Warning,
}

/// One piece of evidence: what it shows, about which host and source, and the line. Host and
/// source are borrowed from the record where they can be: evidence is noted per record.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence<'a> {
    pub kind: FindingKind,
    pub host: Cow<'a, str>,
    pub source: Cow<'a, str>,
    pub detail: &'static str,
    pub ts_ns: i64,
    pub line: &'a [u8],
}

/// Bytes of an evidence line kept.
const EVIDENCE_BYTES: usize = 512;

#[derive(Debug, Clone)]
struct Seen {
    count: u64,
    first_ns: i64,
    last_ns: i64,
    detail: &'static str,
    evidence: String,
    origin: String,
}

/// How much evidence, over what time.
#[derive(Debug, Clone, Copy)]
struct Span {
    count: u64,
    first_ns: i64,
    last_ns: i64,
}

/// A kind's findings: by host, then by source (looked up by `&str`, so noting evidence of a
/// finding already kept allocates nothing).
type ByHost = HashMap<Box<str>, HashMap<Box<str>, Seen, RandomState>, RandomState>;

/// Findings of a run, deduplicated by (kind, host, source).
#[derive(Debug, Clone)]
pub struct Findings {
    max: usize,
    /// Indexed by [`FindingKind::index`].
    kinds: [ByHost; FindingKind::ALL.len()],
    /// Findings kept.
    len: usize,
    /// Evidence of findings not kept, past the limit.
    pub dropped: u64,
}

impl Default for Findings {
    fn default() -> Self {
        Findings::new(MAX_FINDINGS)
    }
}

/// Distinct findings kept by default.
pub const MAX_FINDINGS: usize = 10_000;

impl Findings {
    /// Findings kept.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn new(max: usize) -> Self {
        Findings { max, kinds: Default::default(), len: 0, dropped: 0 }
    }

    /// Counts one piece of evidence from `origin` (a file, a pod).
    pub fn note(&mut self, evidence: Evidence<'_>, origin: &str) {
        let line = &evidence.line[..evidence.line.len().min(EVIDENCE_BYTES)];
        let seen = || Seen {
            count: 1,
            first_ns: evidence.ts_ns,
            last_ns: evidence.ts_ns,
            detail: evidence.detail,
            evidence: String::from_utf8_lossy(line).into_owned(),
            origin: origin.to_owned(),
        };
        let span = Span { count: 1, first_ns: evidence.ts_ns, last_ns: evidence.ts_ns };
        self.add(evidence.kind, (&evidence.host, &evidence.source), span, seen);
    }

    /// Adds `span` to the finding (kind, host, source), made by `seen` if it is new and there
    /// is room.
    fn add(
        &mut self,
        kind: FindingKind,
        (host, source): (&str, &str),
        span: Span,
        seen: impl FnOnce() -> Seen,
    ) {
        let hosts = &mut self.kinds[kind.index()];
        if let Some(ours) = hosts.get_mut(host).and_then(|sources| sources.get_mut(source)) {
            // The evidence is the earliest line's (the least one at a tie), whatever order
            // parts merge in.
            let earlier = span.first_ns < ours.first_ns;
            if earlier || span.first_ns == ours.first_ns {
                let theirs = seen();
                if earlier || theirs.evidence < ours.evidence {
                    ours.evidence = theirs.evidence;
                    ours.origin = theirs.origin;
                    ours.detail = theirs.detail;
                }
            }
            ours.count += span.count;
            ours.first_ns = ours.first_ns.min(span.first_ns);
            ours.last_ns = ours.last_ns.max(span.last_ns);
            return;
        }
        if self.len >= self.max {
            self.dropped += span.count;
            return;
        }
        hosts.entry(host.into()).or_default().insert(source.into(), seen());
        self.len += 1;
    }

    pub fn merge(&mut self, other: &Findings) {
        self.dropped += other.dropped;
        for n in other.iter() {
            // Copied only when it is kept: most merged findings are already known.
            let theirs = || Seen {
                count: n.count,
                first_ns: n.first_ns,
                last_ns: n.last_ns,
                detail: n.detail,
                evidence: n.evidence.to_owned(),
                origin: n.origin.to_owned(),
            };
            let span = Span { count: n.count, first_ns: n.first_ns, last_ns: n.last_ns };
            self.add(n.kind, (n.host, n.source), span, theirs);
        }
    }

    /// Every finding noted, in no order.
    pub fn iter(&self) -> impl Iterator<Item = Noted<'_>> {
        FindingKind::ALL.into_iter().zip(&self.kinds).flat_map(|(kind, hosts)| {
            hosts.iter().flat_map(move |(host, sources)| {
                sources.iter().map(move |(source, seen)| Noted {
                    kind,
                    host,
                    source,
                    count: seen.count,
                    first_ns: seen.first_ns,
                    last_ns: seen.last_ns,
                    detail: seen.detail,
                    evidence: &seen.evidence,
                    origin: &seen.origin,
                })
            })
        })
    }

    /// The findings of the hosts `keep` keeps, most severe first, then most frequent.
    pub fn report(&self, keep: impl Fn(&str) -> bool) -> Vec<FindingReport> {
        let mut report: Vec<FindingReport> = self
            .iter()
            .filter(|n| keep(n.host))
            .map(|n| FindingReport {
                kind: n.kind,
                severity: n.kind.severity(),
                host: n.host.to_owned(),
                source: n.source.to_owned(),
                count: n.count,
                first_seen: format_rfc3339_ms(n.first_ns),
                last_seen: format_rfc3339_ms(n.last_ns),
                detail: n.detail.to_owned(),
                evidence: n.evidence.to_owned(),
                origin: n.origin.to_owned(),
            })
            .collect();
        sort_report(&mut report);
        report
    }
}

/// Most severe first, then most frequent, then by kind, host and source.
pub fn sort_report(report: &mut [FindingReport]) {
    report.sort_by(|a, b| {
        (a.severity, std::cmp::Reverse(a.count), a.kind, &a.host, &a.source).cmp(&(
            b.severity,
            std::cmp::Reverse(b.count),
            b.kind,
            &b.host,
            &b.source,
        ))
    });
}

/// One finding as [`Findings`] holds it.
#[derive(Debug, Clone, Copy)]
pub struct Noted<'a> {
    pub kind: FindingKind,
    pub host: &'a str,
    pub source: &'a str,
    pub count: u64,
    pub first_ns: i64,
    pub last_ns: i64,
    pub detail: &'static str,
    pub evidence: &'a str,
    pub origin: &'a str,
}

/// A finding as reports show it (`findings` in `stats -o json`, `egresslens findings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingReport {
    pub kind: FindingKind,
    pub severity: Severity,
    pub host: String,
    /// `namespace/workload`, else the source IP.
    pub source: String,
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// What the evidence shows, in words.
    pub detail: String,
    /// The first line that showed it (up to 512 bytes).
    pub evidence: String,
    /// Where that line came from.
    pub origin: String,
}

/// What a waypoint record shows, if anything.
pub fn from_entry<'a>(
    entry: &'a Entry<'_>,
    ctx: &LineContext<'_>,
    line: &'a [u8],
) -> Option<Evidence<'a>> {
    let cluster = entry.upstream_cluster.as_deref().filter(|c| !c.is_empty() && *c != "-");
    let flags = entry.response_flags.as_deref().unwrap_or("");
    let flag = |f: &str| flags.split(',').any(|x| x == f);
    let (kind, detail) = match cluster {
        Some("PassthroughCluster" | "AllowAnyDynamicDNSCluster") => (
            FindingKind::UnregisteredEgress,
            "the waypoint passed it through: no ServiceEntry registers this host",
        ),
        Some("BlackHoleCluster") => {
            (FindingKind::BlockedEgress, "the waypoint refused it (REGISTRY_ONLY, no ServiceEntry)")
        }
        None if flag("NR") => {
            (FindingKind::UnregisteredEgress, "no route for this host at the waypoint (NR)")
        }
        None if flag("UH") => {
            (FindingKind::BlockedEgress, "no healthy upstream for this host at the waypoint (UH)")
        }
        _ if tls_failure(entry) && entry.response_code == Some(503) && flag("UF") => (
            FindingKind::TlsOriginationFailing,
            "the waypoint's TLS handshake with the origin fails (503 UF, TLS error)",
        ),
        _ => return None,
    };
    Some(Evidence {
        kind,
        host: Cow::Borrowed(entry.host().unwrap_or("-")),
        source: record_source(entry, ctx),
        detail,
        ts_ns: ctx.record_ts(entry),
        line,
    })
}

/// A request for service port 80 that the waypoint sent upstream on port 80: evidence of
/// `tls_not_originated` if the host's TLS is meant to be originated (see the module above).
pub fn plaintext_upstream<'a>(
    entry: &'a Entry<'_>,
    ctx: &LineContext<'_>,
    line: &'a [u8],
) -> Option<Evidence<'a>> {
    let cluster = ClusterName::parse(entry.upstream_cluster.as_deref()?)?;
    let upstream_port = entry.upstream_host.as_deref().and_then(port_of);
    if !(cluster.port == Some(80) && upstream_port == Some(80)) {
        return None;
    }
    Some(Evidence {
        kind: FindingKind::TlsNotOriginated,
        host: Cow::Borrowed(entry.host().unwrap_or("-")),
        source: record_source(entry, ctx),
        detail: PLAINTEXT_DETAIL,
        ts_ns: ctx.record_ts(entry),
        line,
    })
}

/// What `tls_not_originated` shows, in words.
pub const PLAINTEXT_DETAIL: &str =
    "sent upstream in plaintext on port 80, while the waypoint originates TLS (:443) for this host";

/// Who sent a waypoint record's request: its workload when resolved (as ztunnel names
/// sources), else its IP.
fn record_source<'a>(entry: &'a Entry<'_>, ctx: &LineContext<'_>) -> Cow<'a, str> {
    let ip = entry.downstream_remote_address.as_deref().map_or("-", host_of_address);
    match ctx.workloads.and_then(|w| w.lookup(ip)) {
        Some(workload) => Cow::Owned(format!("{}/{}", workload.namespace, workload.name)),
        None => Cow::Borrowed(ip),
    }
}

/// A TLS error in the upstream transport failure (`TLS_error:…`, older Envoy `TLS error: …`).
fn tls_failure(entry: &Entry<'_>) -> bool {
    entry.upstream_transport_failure_reason.as_deref().is_some_and(|reason| {
        reason.contains("TLS_error") || reason.to_ascii_lowercase().contains("tls error")
    })
}

/// What a probe's response shows, if anything: one straight from the origin bypassed the
/// waypoint. `source` is where it was sent from; `line` its [`Classified::summary`].
pub fn from_probe<'a>(
    result: &'a Classified,
    source: &'a str,
    ts_ns: i64,
    line: &'a [u8],
) -> Option<Evidence<'a>> {
    if result.verdict != Verdict::Direct {
        return None;
    }
    Some(Evidence {
        kind: FindingKind::BypassDirectResponse,
        host: Cow::Borrowed(result.host()),
        source: Cow::Borrowed(source),
        detail: "the answer came straight from the origin (its own server, no x-envoy-* header): \
                 the request did not pass the waypoint",
        ts_ns,
        line,
    })
}

/// What a registered host's posture shows at `ts_ns`, if anything: its waypoint has no ready
/// pod. The source is the waypoint; the evidence the problem's message.
pub fn from_posture(posture: &HostPosture, ts_ns: i64) -> Option<Evidence<'_>> {
    let problem = posture.problems.iter().find(|p| p.kind == ProblemKind::WaypointNotReady)?;
    Some(Evidence {
        kind: FindingKind::WaypointNotReady,
        host: Cow::Borrowed(&posture.host),
        source: Cow::Borrowed(posture.waypoint.as_deref().unwrap_or("-")),
        detail: "the waypoint that should carry this host's traffic has no ready pod",
        ts_ns,
        line: problem.message.as_bytes(),
    })
}

/// What a ztunnel connection shows, if anything: outbound, not tunnelled, to an address
/// outside `internal` is a bypass: of a registered host's waypoint when ztunnel named the
/// service, else egress to an unregistered destination.
pub fn from_connection<'a>(
    conn: &'a Connection<'_>,
    internal: &InternalRanges,
    ctx: &LineContext<'_>,
    line: &'a [u8],
) -> Option<Evidence<'a>> {
    if !conn.is_outbound_complete() || !conn.bypasses(internal) {
        return None;
    }
    let address = conn.dst_addr.as_deref()?;
    let source = conn.source();
    let (kind, host, detail) = match conn.dst_service.as_deref() {
        Some(service) => (
            FindingKind::BypassZtunnelDirect,
            Cow::Borrowed(service),
            "ztunnel sent a registered host's traffic straight out, not to its waypoint",
        ),
        None => (
            FindingKind::UnregisteredEgress,
            Cow::Borrowed(host_of_address(address)),
            "ztunnel sent it straight out to an address no ServiceEntry registers",
        ),
    };
    Some(Evidence { kind, host, source, detail, ts_ns: ctx.connection_ts(conn), line })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::ztunnel::parse;
    use crate::parse::{Projection, parse_message};

    fn entry_evidence(line: &str) -> Option<(FindingKind, String, String)> {
        let entry = parse_message(line.as_bytes(), Projection::All).unwrap();
        let ctx = LineContext::default();
        from_entry(&entry, &ctx, line.as_bytes())
            .map(|e| (e.kind, e.host.into_owned(), e.source.into_owned()))
    }

    #[test]
    fn waypoint_records_show_unregistered_blocked_and_failing_tls() {
        let passthrough = r#"{"authority":"api.unknown.example","response_code":200,"upstream_cluster":"PassthroughCluster","downstream_remote_address":"10.0.1.7:5000","method":"GET"}"#;
        let blackhole = r#"{"authority":"api.unknown.example","response_code":502,"upstream_cluster":"BlackHoleCluster","downstream_remote_address":"10.0.1.7:5000","method":"GET"}"#;
        let no_route = r#"{"authority":"api.unknown.example","response_code":404,"response_flags":"NR","upstream_cluster":null,"method":"GET"}"#;
        let tls = r#"{"authority":"aliyun.com","response_code":503,"response_flags":"UF","upstream_cluster":"outbound|80||aliyun.com","upstream_transport_failure_reason":"TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end","method":"GET"}"#;
        let fine = r#"{"authority":"aliyun.com","response_code":301,"upstream_cluster":"outbound|80||aliyun.com","upstream_host":"140.205.135.3:443","method":"GET"}"#;
        let plain = r#"{"authority":"aliyun.com","response_code":301,"upstream_cluster":"inbound-vip|80|http|aliyun.com","upstream_host":"140.205.135.3:80","downstream_remote_address":"10.0.1.7:5000","method":"GET"}"#;
        let u = FindingKind::UnregisteredEgress;
        assert_eq!(
            entry_evidence(passthrough),
            Some((u, "api.unknown.example".into(), "10.0.1.7".into()))
        );
        assert_eq!(entry_evidence(blackhole).unwrap().0, FindingKind::BlockedEgress);
        assert_eq!(entry_evidence(no_route).unwrap().0, u);
        assert_eq!(entry_evidence(tls).unwrap().0, FindingKind::TlsOriginationFailing);
        assert_eq!(entry_evidence(fine), None);
        assert_eq!(entry_evidence(plain), None, "plaintext is evidence apart");
        let plaintext = |line: &str| {
            let entry = parse_message(line.as_bytes(), Projection::All).unwrap();
            let ctx = LineContext::default();
            plaintext_upstream(&entry, &ctx, line.as_bytes()).map(|e| (e.kind, e.host.into_owned()))
        };
        assert_eq!(plaintext(plain), Some((FindingKind::TlsNotOriginated, "aliyun.com".into())));
        assert_eq!(plaintext(fine), None);
    }

    #[test]
    fn the_evidence_is_the_earliest_line_whatever_order_parts_merge_in() {
        let piece = |ts_ns, line: &'static [u8]| Evidence {
            kind: FindingKind::TlsNotOriginated,
            host: "aliyun.com".into(),
            source: "10.0.1.7".into(),
            detail: "test",
            ts_ns,
            line,
        };
        let part = |ts_ns, line| {
            let mut findings = Findings::default();
            findings.note(piece(ts_ns, line), "a.log");
            findings
        };
        let (early, late, tie) = (part(1, b"early"), part(5, b"late"), part(1, b"another"));
        let evidence = |parts: [&Findings; 3]| {
            let mut all = Findings::default();
            for p in parts {
                all.merge(p);
            }
            let noted = all.iter().next().map(|n| (n.evidence.to_owned(), n.count, n.first_ns));
            noted.unwrap()
        };
        let want = ("another".to_owned(), 3, 1);
        assert_eq!(evidence([&late, &early, &tie]), want);
        assert_eq!(evidence([&early, &tie, &late]), want);
        assert_eq!(evidence([&tie, &late, &early]), want);
    }

    #[test]
    fn reports_keep_the_hosts_asked_for() {
        let piece = |kind, host: &str| Evidence {
            kind,
            host: host.to_owned().into(),
            source: "10.0.1.7".into(),
            detail: "test",
            ts_ns: 1,
            line: b"line",
        };
        let mut findings = Findings::default();
        findings.note(piece(FindingKind::TlsNotOriginated, "aliyun.com"), "a.log");
        findings.note(piece(FindingKind::TlsNotOriginated, "plain.example"), "a.log");
        let kept: Vec<_> =
            findings.report(|host| host == "aliyun.com").into_iter().map(|f| f.host).collect();
        assert_eq!(kept, ["aliyun.com"]);
    }

    #[test]
    fn ztunnel_direct_to_an_external_address_is_bypass() {
        let internal = InternalRanges::default();
        let evidence = |line: &str| {
            let conn = parse(line).unwrap();
            let ctx = LineContext::default();
            from_connection(&conn, &internal, &ctx, line.as_bytes())
                .map(|e| (e.kind, e.host.into_owned(), e.source.into_owned()))
        };
        let registered = "2025-08-18T09:36:31Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51240 src.workload=\"sleep\" src.namespace=\"default\" dst.addr=140.205.135.3:80 dst.service=\"aliyun.com\" direction=\"outbound\"";
        let unregistered = "2025-08-18T09:36:31Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.8:51240 dst.addr=142.250.191.142:443 direction=\"outbound\"";
        let tunnelled = "2025-08-18T09:36:31Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51234 dst.addr=10.0.3.9:15008 dst.hbone_addr=240.240.0.3:80 dst.service=\"aliyun.com\" direction=\"outbound\"";
        let internal_direct = "2025-08-18T09:36:31Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51234 dst.addr=10.0.3.9:5432 direction=\"outbound\"";
        assert_eq!(
            evidence(registered),
            Some((FindingKind::BypassZtunnelDirect, "aliyun.com".into(), "default/sleep".into()))
        );
        assert_eq!(
            evidence(unregistered),
            Some((FindingKind::UnregisteredEgress, "142.250.191.142".into(), "10.0.1.8".into()))
        );
        assert_eq!(evidence(tunnelled), None);
        assert_eq!(evidence(internal_direct), None);
    }

    #[test]
    fn a_direct_answer_is_bypass_and_a_proxied_one_is_not() {
        let proxies = ["istio-envoy".to_owned()];
        let text = "### http://aliyun.com:80/health\nHTTP/1.1 301 Moved\nServer: Tengine\n\n\
                    ### api.github.com\nHTTP/1.1 200 OK\nserver: istio-envoy\n";
        let probes = crate::probe::parse_blocks(text, &proxies);
        let summary = probes[0].summary();
        assert_eq!(
            summary,
            "http://aliyun.com:80/health: HTTP 301, server: Tengine, no x-envoy-* header"
        );
        let evidence = from_probe(&probes[0], "shop/checkout", 7, summary.as_bytes()).unwrap();
        assert_eq!(
            (evidence.kind, &*evidence.host, &*evidence.source),
            (FindingKind::BypassDirectResponse, "aliyun.com", "shop/checkout")
        );
        assert_eq!(from_probe(&probes[1], "shop/checkout", 7, b""), None);
    }

    #[test]
    fn findings_deduplicate_merge_and_stay_bounded() {
        let piece = |host: &str, ts_ns| Evidence {
            kind: FindingKind::UnregisteredEgress,
            host: host.to_owned().into(),
            source: "10.0.1.7".into(),
            detail: "test",
            ts_ns,
            line: b"line",
        };
        let mut a = Findings::new(2);
        a.note(piece("x.example", 5), "a.log");
        a.note(piece("x.example", 3), "a.log");
        a.note(piece("y.example", 4), "a.log");
        a.note(piece("z.example", 4), "a.log");
        assert_eq!(a.dropped, 1);
        let mut b = Findings::new(2);
        b.note(piece("x.example", 9), "b.log");
        b.note(piece("w.example", 1), "b.log");
        a.merge(&b);
        assert_eq!(a.dropped, 2);
        let report = a.report(|_| true);
        assert_eq!(report.len(), 2);
        assert_eq!((report[0].host.as_str(), report[0].count), ("x.example", 3));
        assert_eq!(report[0].first_seen, format_rfc3339_ms(3));
        assert_eq!(report[0].last_seen, format_rfc3339_ms(9));
        assert_eq!(report[0].origin, "a.log");
    }
}
