//! Egress metrics, named by the HTTP client semantic conventions (a waypoint's egress request
//! is the client side of the external call), plus egresslens's own: findings, TLS
//! origination, ztunnel connections, and the collector's health.
//!
//! Workers aggregate a chunk's records per series ([`ChunkMetrics`]) and record once per
//! series and chunk: the HTTP histograms into the run's [`HttpHistograms`], the rest into the
//! SDK's instruments. Hosts past [`HostCap`]'s limit are recorded as `server.address="_other"`
//! and counted, so the series stay within the cardinality limits.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Meter};

use arrow_array::RecordBatch;

use super::histograms::{ErrorKey, Series, Shard};
use crate::findings::Findings;
use crate::parse::derived::{ClusterName, port_of};
use crate::parse::ztunnel::Connection;
use crate::parse::{Entry, RejectReason};
use crate::schema::finding_col;
use crate::stats::{OVERFLOW_HOST, is_error};

/// `http.client.request.duration`'s advisory buckets (seconds), as the convention gives them.
pub const DURATION_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Every metric egresslens exports: name, instrument, unit. The dashboards test checks its
/// panels against these, after the Prometheus name translation.
pub const METRICS: [(&str, Kind, &str); 18] = [
    ("http.client.request.duration", Kind::Histogram, "s"),
    ("http.client.request.body.size", Kind::Histogram, "By"),
    ("http.client.response.body.size", Kind::Histogram, "By"),
    ("egresslens.findings", Kind::Counter, "{finding}"),
    ("egresslens.tls.originated", Kind::Counter, "{request}"),
    ("egresslens.tls.plaintext_upstream", Kind::Counter, "{request}"),
    ("egresslens.ztunnel.connections", Kind::Counter, "{connection}"),
    ("egresslens.ztunnel.bytes", Kind::Counter, "By"),
    ("egresslens.collector.lines", Kind::Counter, "{line}"),
    ("egresslens.collector.records", Kind::Counter, "{record}"),
    ("egresslens.collector.rejects", Kind::Counter, "{line}"),
    ("egresslens.collector.bytes", Kind::Counter, "By"),
    ("egresslens.collector.commits", Kind::Counter, "{commit}"),
    ("egresslens.collector.lag", Kind::Gauge, "s"),
    ("egresslens.export.hosts_folded", Kind::Counter, "{request}"),
    ("egresslens.export.failures", Kind::Counter, "{export}"),
    ("egresslens.export.dropped", Kind::Counter, "{span}"),
    ("egresslens.export.spans", Kind::Counter, "{span}"),
];

/// The metrics' attribute keys (Prometheus labels once dots are underscores).
pub mod attr {
    /// The external host (`_other` past the host limit).
    pub const SERVER_ADDRESS: &str = "server.address";
    /// The service port the caller asked for.
    pub const SERVER_PORT: &str = "server.port";
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    /// Response flags, else the failing status code.
    pub const ERROR_TYPE: &str = "error.type";
    pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
    pub const FINDING_KIND: &str = "egresslens.finding.kind";
    /// `namespace/workload` when known, else an IP.
    pub const FINDING_SOURCE: &str = "egresslens.finding.source";
    /// A ztunnel connection's destination: its service, else the address asked for.
    pub const DESTINATION_ADDRESS: &str = "destination.address";
    /// A ztunnel connection went over HBONE (to a waypoint or a mesh workload).
    pub const VIA_WAYPOINT: &str = "egresslens.via_waypoint";
    pub const NETWORK_IO_DIRECTION: &str = "network.io.direction";
    pub const REJECT_REASON: &str = "egresslens.reject.reason";
    pub const K8S_POD_NAME: &str = "k8s.pod.name";
    /// `metrics` or `traces`, on the export counts.
    pub const SIGNAL: &str = "signal";

    /// Every key above.
    pub const ALL: [&str; 14] = [
        SERVER_ADDRESS,
        SERVER_PORT,
        HTTP_REQUEST_METHOD,
        HTTP_RESPONSE_STATUS_CODE,
        ERROR_TYPE,
        NETWORK_PROTOCOL_VERSION,
        FINDING_KIND,
        FINDING_SOURCE,
        DESTINATION_ADDRESS,
        VIA_WAYPOINT,
        NETWORK_IO_DIRECTION,
        REJECT_REASON,
        K8S_POD_NAME,
        SIGNAL,
    ];
}

/// An instrument kind, as far as naming in Prometheus goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
    Gauge,
}

/// The Prometheus series names an OTel metric becomes (the OTel→Prometheus compatibility
/// rules: dots to underscores, the unit's word appended, `_total` for counters, `_bucket`,
/// `_sum` and `_count` for histograms; `{…}` annotations are not units).
pub fn prometheus_names(name: &str, kind: Kind, unit: &str) -> Vec<String> {
    let mut base = name.replace(['.', '-'], "_");
    let word = match unit {
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        "ms" => Some("milliseconds"),
        _ => None,
    };
    if let Some(word) = word.filter(|w| !base.ends_with(w)) {
        base = format!("{base}_{word}");
    }
    match kind {
        Kind::Counter => vec![format!("{base}_total")],
        Kind::Gauge => vec![base],
        Kind::Histogram => ["bucket", "sum", "count"].map(|s| format!("{base}_{s}")).to_vec(),
    }
}

/// The instruments, made once per provider.
#[derive(Debug, Clone)]
pub struct Instruments {
    findings: Counter<u64>,
    tls_originated: Counter<u64>,
    plaintext_upstream: Counter<u64>,
    ztunnel_connections: Counter<u64>,
    ztunnel_bytes: Counter<u64>,
    lines: Counter<u64>,
    records: Counter<u64>,
    rejects: Counter<u64>,
    bytes: Counter<u64>,
    commits: Counter<u64>,
    lag: Gauge<f64>,
    hosts_folded: Counter<u64>,
}

impl Instruments {
    pub fn new(meter: &Meter) -> Instruments {
        let counter = |name: &'static str, unit: &'static str, description: &'static str| {
            meter.u64_counter(name).with_unit(unit).with_description(description).build()
        };
        Instruments {
            findings: counter(
                "egresslens.findings",
                "{finding}",
                "Evidence of bypass, unregistered or blocked egress and TLS problems",
            ),
            tls_originated: counter(
                "egresslens.tls.originated",
                "{request}",
                "Requests for service port 80 that the waypoint sent upstream to 443",
            ),
            plaintext_upstream: counter(
                "egresslens.tls.plaintext_upstream",
                "{request}",
                "Requests for service port 80 sent upstream in plaintext on 80",
            ),
            ztunnel_connections: counter(
                "egresslens.ztunnel.connections",
                "{connection}",
                "Outbound connections ztunnel completed, by destination and waypoint hop",
            ),
            ztunnel_bytes: counter(
                "egresslens.ztunnel.bytes",
                "By",
                "Bytes of outbound ztunnel connections",
            ),
            lines: counter("egresslens.collector.lines", "{line}", "Log lines read"),
            records: counter(
                "egresslens.collector.records",
                "{record}",
                "Waypoint access-log records parsed",
            ),
            rejects: counter(
                "egresslens.collector.rejects",
                "{line}",
                "Lines rejected, by reason (kept in the rejects table)",
            ),
            bytes: counter("egresslens.collector.bytes", "By", "Bytes of log read"),
            commits: counter("egresslens.collector.commits", "{commit}", "Store commits made"),
            lag: meter
                .f64_gauge("egresslens.collector.lag")
                .with_unit("s")
                .with_description("How far behind its records the collector parses, per pod")
                .build(),
            hosts_folded: counter(
                "egresslens.export.hosts_folded",
                "{request}",
                "Requests exported as server.address=\"_other\" past the host limit",
            ),
        }
    }

    pub fn commit(&self) {
        self.commits.add(1, &[]);
    }
}

/// The hosts exported under their own name: the first `max` seen, the rest as `_other`.
#[derive(Debug)]
pub struct HostCap {
    max: usize,
    hosts: RwLock<HashSet<Box<str>, RandomState>>,
    /// Requests recorded under `_other` because the set was full (counted by the workers).
    pub folded: AtomicU64,
}

impl HostCap {
    pub fn new(max: usize) -> HostCap {
        HostCap { max, hosts: RwLock::default(), folded: AtomicU64::new(0) }
    }

    /// `host` if it has, or gets, a place; else `_other`.
    pub fn name<'h>(&self, host: &'h str) -> &'h str {
        let known = self.hosts.read().map(|hosts| hosts.contains(host)).unwrap_or(false);
        if known {
            return host;
        }
        if let Ok(mut hosts) = self.hosts.write()
            && (hosts.len() < self.max || hosts.contains(host))
        {
            hosts.insert(host.into());
            return host;
        }
        OVERFLOW_HOST
    }
}

/// A chunk's metrics, aggregated by a worker before they go into the instruments.
#[derive(Debug, Default)]
pub struct ChunkMetrics {
    /// Per host (the worker shard's index): requests for service port 80 sent upstream to
    /// 443 (TLS originated), and to 80.
    tls: HashMap<u32, [u64; 2], RandomState>,
    /// Requests recorded under `_other`.
    folded: u64,
    /// Per (destination, via a waypoint): connections, bytes sent, bytes received.
    ztunnel: HashMap<(Box<str>, bool), [u64; 3], RandomState>,
    lines: u64,
    records: u64,
    rejects: Vec<(RejectReason, u64)>,
    /// The newest record time of the chunk, for the lag.
    newest_ns: Option<i64>,
}

/// The methods the HTTP conventions name; anything else is `_OTHER`.
pub(crate) fn known_method(method: Option<&str>) -> &'static str {
    const KNOWN: [&str; 10] =
        ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY"];
    method.and_then(|m| KNOWN.into_iter().find(|k| *k == m)).unwrap_or("_OTHER")
}

/// `network.protocol.version` from Envoy's `protocol`.
fn protocol_version(protocol: Option<&str>) -> Option<&'static str> {
    match protocol? {
        "HTTP/1.1" => Some("1.1"),
        "HTTP/1.0" => Some("1.0"),
        "HTTP/2" => Some("2"),
        "HTTP/3" => Some("3"),
        _ => None,
    }
}

/// What `error.type` says of an entry: the response flags when Envoy set any, else the status
/// code of a 4xx/5xx or of no response (0) where one was expected.
pub(crate) fn failure<'e>(entry: &'e Entry<'_>) -> Option<Result<&'e str, u16>> {
    if let Some(flags) = entry.response_flags.as_deref().filter(|f| !f.is_empty()) {
        return Some(Ok(flags));
    }
    match entry.response_code.unwrap_or(0) {
        0 if is_error(entry) => Some(Err(0)),
        code if code >= 400 => Some(Err(code)),
        _ => None,
    }
}

/// `error.type` as text.
pub fn error_type(entry: &Entry<'_>) -> Option<String> {
    failure(entry).map(|f| f.map_or_else(|code| code.to_string(), str::to_owned))
}

/// The service port of an entry (from its upstream cluster), and the port it went out on.
pub fn ports(entry: &Entry<'_>) -> (Option<u16>, Option<u16>) {
    let service =
        entry.upstream_cluster.as_deref().and_then(ClusterName::parse).and_then(|c| c.port);
    (service, entry.upstream_host.as_deref().and_then(port_of))
}

impl ChunkMetrics {
    /// A record: its counts here, its histograms in the worker's `shard`.
    pub fn record(&mut self, entry: &Entry<'_>, ts_ns: i64, (shard, cap): (&mut Shard, &HostCap)) {
        self.lines += 1;
        self.records += 1;
        self.newest_ns = Some(self.newest_ns.map_or(ts_ns, |t| t.max(ts_ns)));
        let (host, folded) = shard.host(entry.host().unwrap_or("-"), cap);
        self.folded += u64::from(folded);
        let (port, upstream_port) = ports(entry);
        let error = match failure(entry) {
            Some(Ok(flags)) => shard.flags(flags),
            Some(Err(code)) => ErrorKey::Status(code),
            None => ErrorKey::None,
        };
        let series = Series {
            method: known_method(entry.method.as_deref()),
            port,
            status: entry.response_code.filter(|c| *c != 0),
            error,
            protocol: protocol_version(entry.protocol.as_deref()),
        };
        let seconds = entry.duration_ms.map(|ms| ms / 1000.0);
        let sizes = (entry.bytes_received.unwrap_or(0), entry.bytes_sent.unwrap_or(0));
        shard.record(host, series, (seconds, sizes.0, sizes.1));
        if port == Some(80) {
            match upstream_port {
                Some(443) => self.tls.entry(host).or_default()[0] += 1,
                Some(80) => self.tls.entry(host).or_default()[1] += 1,
                _ => {}
            }
        }
    }

    pub fn reject(&mut self, reason: RejectReason) {
        self.lines += 1;
        match self.rejects.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => self.rejects.push((reason, 1)),
        }
    }

    /// Counts an outbound ztunnel connection (as `stats` does: complete ones only).
    pub fn ztunnel(&mut self, conn: &Connection<'_>) {
        self.lines += 1;
        if !conn.is_outbound_complete() {
            return;
        }
        let destination = crate::stats::ztunnel::destination_name(conn);
        let via_waypoint = conn.dst_hbone_addr.is_some();
        let key = (Box::<str>::from(destination), via_waypoint);
        let counts = self.ztunnel.entry(key).or_default();
        counts[0] += 1;
        counts[1] += conn.bytes_sent.unwrap_or(0);
        counts[2] += conn.bytes_recv.unwrap_or(0);
    }

    /// Records the chunk into `instruments` (host names from the worker's `shard`): its
    /// findings too, and `bytes` read; `pod` and `parsed_ns` give the lag.
    pub fn record_into(
        &mut self,
        (instruments, hosts, shard): (&Instruments, &HostCap, &Shard),
        findings: &Findings,
        (bytes, pod, parsed_ns): (u64, Option<&str>, i64),
    ) {
        // Added even when 0: a series that exists from the start rates cleanly.
        instruments.hosts_folded.add(self.folded, &[]);
        hosts.folded.fetch_add(std::mem::take(&mut self.folded), Ordering::Relaxed);
        for (host, [originated, plaintext]) in self.tls.drain() {
            let attributes = [KeyValue::new(attr::SERVER_ADDRESS, shard.name(host).to_owned())];
            if originated > 0 {
                instruments.tls_originated.add(originated, &attributes);
            }
            if plaintext > 0 {
                instruments.plaintext_upstream.add(plaintext, &attributes);
            }
        }
        for ((destination, via_waypoint), [connections, sent, received]) in self.ztunnel.drain() {
            let destination = KeyValue::new(attr::DESTINATION_ADDRESS, String::from(destination));
            let via = KeyValue::new(attr::VIA_WAYPOINT, via_waypoint);
            instruments.ztunnel_connections.add(connections, &[destination.clone(), via.clone()]);
            for (direction, n) in [("transmit", sent), ("receive", received)] {
                let direction = KeyValue::new(attr::NETWORK_IO_DIRECTION, direction);
                instruments.ztunnel_bytes.add(n, &[destination.clone(), via.clone(), direction]);
            }
        }
        for noted in findings.iter() {
            let attributes = [
                KeyValue::new(attr::FINDING_KIND, noted.kind.as_str()),
                KeyValue::new(attr::SERVER_ADDRESS, hosts.name(noted.host).to_owned()),
                KeyValue::new(attr::FINDING_SOURCE, noted.source.to_owned()),
            ];
            instruments.findings.add(noted.count, &attributes);
        }
        instruments.lines.add(std::mem::take(&mut self.lines), &[]);
        instruments.records.add(std::mem::take(&mut self.records), &[]);
        instruments.bytes.add(bytes, &[]);
        for (reason, n) in self.rejects.drain(..) {
            instruments.rejects.add(n, &[KeyValue::new(attr::REJECT_REASON, reason.as_str())]);
        }
        if let Some(newest) = self.newest_ns.take() {
            let lag = parsed_ns.saturating_sub(newest).max(0) as f64 / 1e9;
            let pod = KeyValue::new(attr::K8S_POD_NAME, pod.unwrap_or("-").to_owned());
            instruments.lag.record(lag, &[pod]);
        }
    }
}

/// The findings counter from the rows of a `findings` batch.
pub(crate) fn record_findings_rows(
    instruments: &Instruments,
    hosts: &HostCap,
    batch: &RecordBatch,
) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt64Type;
    let column = |name: &str| batch.column_by_name(name);
    let (Some(kind), Some(host), Some(source), Some(count)) = (
        column(finding_col::KIND).and_then(|c| c.as_string_opt::<i32>()),
        column(finding_col::HOST).and_then(|c| c.as_string_opt::<i32>()),
        column(finding_col::SOURCE).and_then(|c| c.as_string_opt::<i32>()),
        column(finding_col::COUNT).and_then(|c| c.as_primitive_opt::<UInt64Type>()),
    ) else {
        return;
    };
    for row in 0..batch.num_rows() {
        let attributes = [
            KeyValue::new(attr::FINDING_KIND, kind.value(row).to_owned()),
            KeyValue::new(attr::SERVER_ADDRESS, hosts.name(host.value(row)).to_owned()),
            KeyValue::new(attr::FINDING_SOURCE, source.value(row).to_owned()),
        ];
        instruments.findings.add(count.value(row), &attributes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_the_translation_rules() {
        assert_eq!(
            prometheus_names("http.client.request.duration", Kind::Histogram, "s"),
            [
                "http_client_request_duration_seconds_bucket",
                "http_client_request_duration_seconds_sum",
                "http_client_request_duration_seconds_count"
            ]
        );
        assert_eq!(
            prometheus_names("egresslens.findings", Kind::Counter, "{finding}"),
            ["egresslens_findings_total"]
        );
        assert_eq!(
            prometheus_names("egresslens.ztunnel.bytes", Kind::Counter, "By"),
            ["egresslens_ztunnel_bytes_total"]
        );
        assert_eq!(
            prometheus_names("egresslens.collector.lag", Kind::Gauge, "s"),
            ["egresslens_collector_lag_seconds"]
        );
    }

    #[test]
    fn error_type_is_the_flags_else_the_failing_status() {
        let entry = |code, flags: Option<&'static str>, method: Option<&'static str>| Entry {
            response_code: Some(code),
            response_flags: flags.map(Into::into),
            method: method.map(Into::into),
            ..Entry::default()
        };
        assert_eq!(error_type(&entry(503, Some("UF,URX"), Some("GET"))).as_deref(), Some("UF,URX"));
        assert_eq!(error_type(&entry(404, None, Some("GET"))).as_deref(), Some("404"));
        assert_eq!(error_type(&entry(0, None, Some("GET"))).as_deref(), Some("0"));
        // A TCP entry has no code by nature.
        assert_eq!(error_type(&entry(0, None, None)), None);
        assert_eq!(error_type(&entry(200, None, Some("GET"))), None);
    }

    #[test]
    fn hosts_past_the_cap_are_other_and_counted() {
        let cap = HostCap::new(2);
        assert_eq!(cap.name("a.com"), "a.com");
        assert_eq!(cap.name("b.com"), "b.com");
        assert_eq!(cap.name("c.com"), OVERFLOW_HOST);
        assert_eq!(cap.name("a.com"), "a.com");
    }

    #[test]
    fn a_chunk_groups_records_by_series() {
        let mut chunk = ChunkMetrics::default();
        let get = Entry {
            authority: Some("aliyun.com".into()),
            method: Some("GET".into()),
            response_code: Some(200),
            protocol: Some("HTTP/1.1".into()),
            upstream_cluster: Some("outbound|80||aliyun.com".into()),
            upstream_host: Some("106.11.248.146:443".into()),
            duration_ms: Some(12.0),
            bytes_sent: Some(100),
            ..Entry::default()
        };
        let (mut shard, cap) = (Shard::default(), HostCap::new(10));
        chunk.record(&get, 1, (&mut shard, &cap));
        chunk.record(&get, 2, (&mut shard, &cap));
        let brew = Entry { method: Some("BREW".into()), ..get.clone() };
        chunk.record(&brew, 3, (&mut shard, &cap));
        let series = shard.dists();
        assert_eq!(series.len(), 2);
        let (get, other) = (&series[0], &series[1]);
        assert_eq!((get.0, get.1.method, get.1.port), ("aliyun.com", "GET", Some(80)));
        assert_eq!(
            (get.2.requests(), get.2.duration.sum, get.2.response_size.sum),
            (2, 0.024, 200.0)
        );
        assert_eq!(other.1.method, "_OTHER");
        assert_eq!(chunk.tls.get(&0), Some(&[3, 0]));
        assert_eq!(chunk.newest_ns, Some(3));
    }
}
