//! OTLP export into a receiver inside this test process (`support/receiver.rs`: the
//! protocol's own messages over gRPC and HTTP/protobuf on 127.0.0.1). What arrives is compared
//! with the generator's ground truth.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use egresslens::collect::{CollectConfig, Control, collect};
use egresslens::export::config::{OtlpConfig, Overrides, Protocol};
use egresslens::export::metrics::{DURATION_BUCKETS, METRICS};
use egresslens::export::send::MAX_POINTS;
use egresslens::export::traces::TraceRule;
use egresslens::export::{ExportOptions, ExportSummary, Exporter};
use egresslens::source::Input;
use egresslens::store::Store;
use egresslens::traffic::{GenConfig, Truth, generate};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::Span;

#[path = "support/receiver.rs"]
mod receiver;

use receiver::{Received, Receiver, attribute};

fn config(endpoint: String, protocol: Protocol) -> OtlpConfig {
    let overrides = Overrides {
        endpoint: Some(endpoint),
        protocol: Some(protocol),
        // Generous: a debug build gzips megabytes slowly, more so on a busy machine.
        timeout: Some(Duration::from_secs(30)),
        // The last export, at shutdown, carries the totals.
        metric_interval: Some(Duration::from_secs(3600)),
        ..Overrides::default()
    };
    OtlpConfig::resolve(|_| None, &overrides).unwrap().unwrap()
}

/// Generated traffic with incidents, and a share `bad` of malformed lines.
fn generated(lines: u64, seed: u64, bad: f64) -> (Vec<u8>, Truth) {
    let mut bytes = Vec::new();
    let config = GenConfig { lines, seed, incidents: true, bad, ..GenConfig::default() };
    let truth = generate(&config, &mut bytes).unwrap();
    (bytes, truth)
}

/// `collect --once` of `bytes` into a fresh store, exporting as `otlp` and `options` say.
fn collect_exporting(bytes: &[u8], otlp: &OtlpConfig, options: &ExportOptions) -> ExportSummary {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    let exporter = Exporter::start(otlp, options).unwrap();
    let control = Control { telemetry: Some(exporter.telemetry()), ..Control::default() };
    let input = Input::Memory { name: "generated".into(), bytes: bytes.to_vec().into() };
    // Small chunks, so that both workers record and many chunks make each series.
    let config = CollectConfig { chunk_bytes: 64 * 1024, workers: 2, ..CollectConfig::default() };
    collect(&input, &mut store, &config, &control).unwrap();
    drop(control);
    exporter.shutdown(Duration::from_secs(10))
}

/// Per host: the histogram's count and sum over every series of `metric`.
fn histogram_per_host(metric: &Metric) -> BTreeMap<String, (u64, f64)> {
    let Some(metric::Data::Histogram(histogram)) = &metric.data else {
        panic!("{} is not a histogram", metric.name)
    };
    let mut hosts: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for point in &histogram.data_points {
        let host = attribute(&point.attributes, "server.address").unwrap();
        let entry = hosts.entry(host).or_default();
        entry.0 += point.count;
        entry.1 += point.sum.unwrap_or(0.0);
    }
    hosts
}

/// The sum of a counter's points, grouped by the value of `key` (all together for "").
fn counter_by(metric: &Metric, key: &str) -> BTreeMap<String, u64> {
    let Some(metric::Data::Sum(sum)) = &metric.data else { panic!("{} is not a sum", metric.name) };
    let mut groups = BTreeMap::new();
    for point in &sum.data_points {
        let group = attribute(&point.attributes, key).unwrap_or_default();
        let value = match point.value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(n)) => {
                n as u64
            }
            other => panic!("{other:?} is not an integer"),
        };
        *groups.entry(group).or_default() += value;
    }
    groups
}

fn assert_metrics_match_truth(received: &Received, truth: &Truth) {
    let metrics = received.last_metrics();
    let durations = histogram_per_host(&metrics["http.client.request.duration"]);
    let requests = histogram_per_host(&metrics["http.client.request.body.size"]);
    let responses = histogram_per_host(&metrics["http.client.response.body.size"]);
    assert_eq!(durations.keys().collect::<Vec<_>>(), truth.hosts.keys().collect::<Vec<_>>());
    for (host, expected) in &truth.hosts {
        assert_eq!(durations[host].0, expected.requests, "{host}: requests");
        let seconds = expected.duration_ms.sum as f64 / 1000.0;
        assert!(
            (durations[host].1 - seconds).abs() < 1e-6 * seconds.max(1.0),
            "{host}: duration sum"
        );
        assert_eq!(requests[host].1 as u64, expected.bytes_received, "{host}: request bytes");
        assert_eq!(responses[host].1 as u64, expected.bytes_sent, "{host}: response bytes");
    }
    // The convention's advisory buckets, not the SDK's defaults.
    let Some(metric::Data::Histogram(histogram)) = &metrics["http.client.request.duration"].data
    else {
        unreachable!()
    };
    assert_eq!(histogram.data_points[0].explicit_bounds, DURATION_BUCKETS);
    assert_eq!(metrics["http.client.request.duration"].unit, "s");

    let tls = counter_by(&metrics["egresslens.tls.originated"], "server.address");
    for (host, expected) in &truth.hosts {
        assert_eq!(tls.get(host).copied().unwrap_or(0), expected.tls_originated, "{host}: TLS");
    }
    let records = counter_by(&metrics["egresslens.collector.records"], "")[""];
    assert_eq!(records, truth.good);
    let lines = counter_by(&metrics["egresslens.collector.lines"], "")[""];
    assert_eq!(lines, truth.lines);
    let rejects = metrics
        .get("egresslens.collector.rejects")
        .map_or_else(BTreeMap::new, |m| counter_by(m, "egresslens.reject.reason"));
    let expected: BTreeMap<String, u64> = truth.rejects.clone().into_iter().collect();
    assert_eq!(rejects, expected);
    let findings = counter_by(&metrics["egresslens.findings"], "egresslens.finding.kind");
    for (kind, expected) in &truth.findings {
        if *kind == "tls_not_originated" {
            // Exported as plaintext_upstream per host; dashboards join it with the intent.
            continue;
        }
        assert_eq!(findings.get(*kind).copied().unwrap_or(0), *expected, "{kind}");
    }
    let connections = counter_by(&metrics["egresslens.ztunnel.connections"], "");
    assert_eq!(connections.values().sum::<u64>(), truth.ztunnel_connections);
}

fn exports_metrics_equal_to_the_truth(protocol: Protocol) {
    let receiver = Receiver::new();
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let endpoint = match protocol {
        Protocol::Grpc => format!("http://{}", receiver.grpc(any)),
        Protocol::HttpProtobuf => format!("http://{}", receiver.http(any)),
    };
    let (bytes, truth) = generated(20_000, 7, 0.01);
    let options = ExportOptions { cluster: Some("prod-hz".into()), ..ExportOptions::default() };
    let mut otlp = config(endpoint, protocol);
    // Plain by default, as the spec says; gzip over HTTP here, so both ways are exercised.
    let gzip = protocol == Protocol::HttpProtobuf;
    otlp.metrics.as_mut().unwrap().gzip = gzip;
    let summary = collect_exporting(&bytes, &otlp, &options);
    assert_eq!((summary.metric_failures, summary.flush_failed), (0, false), "{summary:?}");
    assert_metrics_match_truth(&receiver.received, &truth);
    // Every metric the dashboards may name is exported, and only those.
    let names: BTreeSet<String> = receiver.received.last_metrics().into_keys().collect();
    let listed: BTreeSet<String> = METRICS.iter().map(|(name, ..)| name.to_string()).collect();
    assert_eq!(names, listed);
    // An export of many series comes in several requests, none past the limit (and the gRPC
    // receiver takes 4 MiB at most, as a collector does by default).
    let requests = receiver.received.metrics.lock().unwrap().requests.clone();
    let first: usize = requests.iter().take_while(|(points, _)| *points == MAX_POINTS).count();
    assert!(first >= 1, "the first export is split: {requests:?}");
    assert!(requests.iter().all(|(points, _)| *points <= MAX_POINTS), "{requests:?}");
    if gzip {
        let wire = receiver.received.metrics_wire.lock().unwrap().clone();
        let plain: usize = requests.iter().map(|(_, size)| size).sum();
        let sent: usize = wire.iter().map(|(size, _)| size).sum();
        assert!(wire.iter().all(|(_, gzipped)| *gzipped));
        assert!(sent < plain / 4, "{sent} bytes on the wire for {plain}");
    }
    let resource = receiver.received.resource();
    assert_eq!(resource["service.name"], "egresslens");
    assert_eq!(resource["k8s.cluster.name"], "prod-hz");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn metrics_over_grpc_equal_the_truth() {
    exports_metrics_equal_to_the_truth(Protocol::Grpc);
}

#[test]
fn metrics_over_http_protobuf_equal_the_truth() {
    exports_metrics_equal_to_the_truth(Protocol::HttpProtobuf);
}

/// The spans the rule must give, worked out here from the lines themselves: failures,
/// flagged, slow, and findings' records always; the rest when the trace id (the request id's
/// 16 bytes) has its low 8 bytes below ratio × 2⁶⁴. Returns the trace ids of records with a
/// request id, and (host, start ms) of those without one that must be kept.
fn expected_spans(bytes: &[u8], rule: &TraceRule) -> (BTreeSet<String>, BTreeSet<(String, u64)>) {
    let mut expected = BTreeSet::new();
    let mut without_id = BTreeSet::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(serde_json::Value::Object(record)) = serde_json::from_slice(line) else { continue };
        if !record.contains_key("start_time") {
            continue; // a ztunnel line
        }
        let field = |key: &str| {
            record.get(key).and_then(|v| match v {
                serde_json::Value::String(s) if s != "-" && !s.is_empty() => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let number = |key: &str| field(key).and_then(|v| v.parse::<f64>().ok());
        let code = number("response_code").unwrap_or(0.0);
        let flagged = field("response_flags").is_some();
        let slow = number("duration").is_some_and(|ms| ms >= rule.slow.as_secs_f64() * 1000.0);
        let cluster = field("upstream_cluster").unwrap_or_default();
        let finding = ["PassthroughCluster", "AllowAnyDynamicDNSCluster", "BlackHoleCluster"]
            .contains(&cluster.as_str());
        let failed = code >= 500.0 || (code == 0.0 && field("method").is_some());
        let Some(id) = field("request_id") else {
            // A TCP entry: its trace id is a hash; only the rule's sure part is checked.
            if failed || flagged || slow || finding {
                let host =
                    field("authority_for").or_else(|| field("requested_server_name")).unwrap();
                without_id.insert((host, start_ms(&field("start_time").unwrap())));
            }
            continue;
        };
        let id = id.replace('-', "");
        let low = u64::from_str_radix(&id[16..], 16).unwrap();
        let sampled = (low as f64) < rule.ratio * 18_446_744_073_709_551_616.0;
        if failed || flagged || slow || finding || sampled {
            expected.insert(id);
        }
    }
    (expected, without_id)
}

/// Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds, as the
/// generator writes it (`2025-08-18T09:36:29.700Z`).
fn start_ms(time: &str) -> u64 {
    let number = |range: std::ops::Range<usize>| time[range].parse::<i64>().unwrap();
    let (y, m, d) = (number(0..4), number(5..7), number(8..10));
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let seconds = days * 86_400 + number(11..13) * 3600 + number(14..16) * 60 + number(17..19);
    (seconds * 1000 + number(20..23)) as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn spans_follow_the_sampling_rule_and_keep_their_ids_across_runs() {
    let receiver = Receiver::new();
    let endpoint = format!("http://{}", receiver.grpc(SocketAddr::from(([127, 0, 0, 1], 0))));
    // Well-formed lines only: the expectation below reads them as records.
    let (bytes, _) = generated(20_000, 11, 0.0);
    let rule = TraceRule { ratio: 0.05, slow: Duration::from_millis(2000) };
    let options = ExportOptions { traces: rule, ..ExportOptions::default() };
    let otlp = config(endpoint, Protocol::Grpc);
    let first = collect_exporting(&bytes, &otlp, &options);
    let spans = receiver.received.spans();
    receiver.received.traces.lock().unwrap().clear();
    let second = collect_exporting(&bytes, &otlp, &options);
    let again = receiver.received.spans();
    assert_eq!((first.spans_dropped, second.spans_dropped), (0, 0));

    let (expected, without_id) = expected_spans(&bytes, &rule);
    // The generator gives every HTTP request an id; TCP entries (method `_OTHER`) have none.
    let (with_request_id, hashed): (Vec<&Span>, Vec<&Span>) = spans
        .iter()
        .partition(|s| attribute(&s.attributes, "http.request.method").unwrap() != "_OTHER");
    let traces: BTreeSet<String> = with_request_id.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(with_request_id.len(), expected.len(), "one span per kept record");
    assert_eq!(traces, expected);
    let kept: BTreeSet<(String, u64)> = hashed
        .iter()
        .map(|s| {
            (
                attribute(&s.attributes, "server.address").unwrap(),
                s.start_time_unix_nano / 1_000_000,
            )
        })
        .collect();
    assert!(kept.is_superset(&without_id), "every failed or flagged TCP entry has a span");
    assert_eq!(first.spans_exported, spans.len() as u64);
    let ids = |spans: &[Span]| -> BTreeSet<(Vec<u8>, Vec<u8>)> {
        spans.iter().map(|s| (s.trace_id.clone(), s.span_id.clone())).collect()
    };
    assert_eq!(ids(&spans), ids(&again), "a re-export gives the same ids");

    // Every failure is there, with the conventions' attributes and an error status.
    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            attribute(&s.attributes, "http.response.status_code")
                .is_some_and(|c| c.starts_with('5'))
        })
        .collect();
    assert!(!failed.is_empty());
    for span in &spans {
        assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        let host = attribute(&span.attributes, "server.address").unwrap();
        if let Some(url) = attribute(&span.attributes, "url.full") {
            assert!(url.starts_with(&format!("http://{host}")), "{url}");
            assert_eq!(span.name, attribute(&span.attributes, "http.request.method").unwrap());
        }
    }
    for span in failed {
        let status = span.status.clone().unwrap();
        assert_eq!(status.code, 2, "status Error");
        assert!(attribute(&span.attributes, "error.type").is_some());
        assert!(attribute(&span.attributes, "istio.upstream_cluster").is_some());
    }
}

struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl StopOnDrop<'_> {
    fn stop(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `done` holds, for at most a minute.
/// How long the endpoint stays down.
const OUTAGE: Duration = Duration::from_secs(60);

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The endpoint is down (nothing listens on its port) for a minute while the first half of a
/// followed file is collected, then comes up: ingest is exact throughout, failed exports and
/// dropped spans are counted, and the exporter reconnects (after a minute of backing off), so
/// the totals (cumulative) still equal the truth.
#[test]
fn an_endpoint_down_then_up_loses_no_ingest_and_export_resumes() {
    use std::io::Write;
    use std::sync::atomic::Ordering;

    let (bytes, truth) = generated(20_000, 5, 0.01);
    let half = bytes[..bytes.len() / 2].iter().rposition(|b| *b == b'\n').unwrap() + 1;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("waypoint.log");
    std::fs::write(&log, &bytes[..half]).unwrap();

    // A port with nothing on it, for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut otlp = config(format!("http://127.0.0.1:{port}"), Protocol::Grpc);
    otlp.metric_interval = Duration::from_millis(300);
    let rule = TraceRule { ratio: 0.0, slow: Duration::from_secs(3600) };
    let exporter =
        Exporter::start(&otlp, &ExportOptions { traces: rule, ..ExportOptions::default() })
            .unwrap();
    let counts = exporter.telemetry().counts.clone();
    let control = Control { telemetry: Some(exporter.telemetry()), ..Control::default() };
    let config = CollectConfig {
        once: false,
        poll: Duration::from_millis(50),
        commit_every: Duration::from_millis(200),
        chunk_bytes: 64 * 1024,
        ..CollectConfig::default()
    };
    let store_dir = dir.path().join("store");
    let (mut store, _) = Store::open(&store_dir).unwrap();
    let receiver = Receiver::new();
    let down = std::time::Instant::now();
    let summary = std::thread::scope(|scope| {
        // Stops the collector however this closure ends, so a failed wait fails the test.
        let stop = StopOnDrop(&control.stop);
        let collector =
            scope.spawn(|| collect(&Input::Path(log.clone()), &mut store, &config, &control));
        let failed = || counts.metric_failures.load(Ordering::Relaxed) >= 2;
        wait_until("failed metric exports", failed);
        wait_until("failed span exports", || counts.span_failures.load(Ordering::Relaxed) > 0);
        std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));

        receiver.grpc(SocketAddr::from(([127, 0, 0, 1], port)));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(&bytes[half..])
            .unwrap();
        let all = truth.lines;
        wait_until("every line parsed", || control.lines.load(Ordering::Relaxed) == all);
        wait_until("a metrics export after the return", || {
            !receiver.received.metrics.lock().unwrap().is_empty()
        });
        stop.stop();
        collector.join().unwrap().unwrap()
    });
    drop(control);
    let exported = exporter.shutdown(Duration::from_secs(10));

    let bad: u64 = truth.rejects.values().sum();
    assert_eq!((summary.records as u64, summary.rejects as u64), (truth.good, bad), "ingest");
    // One export every 300 ms failed for a minute, give or take the ones still timing out.
    assert!(exported.metric_failures >= 20 && exported.spans_dropped > 0, "{exported:?}");
    assert!(exported.spans_exported > 0, "spans flow again: {exported:?}");
    assert!(!exported.flush_failed, "{exported:?}");
    assert_metrics_match_truth(&receiver.received, &truth);
    // The self-metrics tell the operator what was lost.
    let metrics = receiver.received.last_metrics();
    let failures = counter_by(&metrics["egresslens.export.failures"], "signal");
    assert!(failures["metrics"] >= 2 && failures["traces"] >= 1, "{failures:?}");
    let dropped = &metrics["egresslens.export.dropped"];
    assert!(counter_by(dropped, "")[""] > 0, "{dropped:?}");
}

/// Findings the collector's rounds make (mesh snapshots, probes) reach the committer as rows,
/// not through the workers; they are counted from those rows.
#[test]
fn findings_rows_from_rounds_are_counted() {
    use egresslens::findings::{Evidence, FindingKind, Findings};
    let receiver = Receiver::new();
    let endpoint = format!("http://{}", receiver.http(SocketAddr::from(([127, 0, 0, 1], 0))));
    let exporter =
        Exporter::start(&config(endpoint, Protocol::HttpProtobuf), &ExportOptions::default())
            .unwrap();
    let mut findings = Findings::default();
    for (kind, host, source) in [
        (FindingKind::WaypointNotReady, "dashscope.aliyuncs.com", "mesh"),
        (FindingKind::BypassDirectResponse, "aliyun.com", "default/sleep-7d9f"),
        (FindingKind::BypassDirectResponse, "aliyun.com", "default/sleep-7d9f"),
    ] {
        let evidence = Evidence {
            kind,
            host: host.into(),
            source: source.into(),
            detail: "",
            ts_ns: 1,
            line: b"",
        };
        findings.note(evidence, "round");
    }
    let rows = egresslens::batch::findings_batch(&findings).unwrap();
    exporter.telemetry().findings_rows(&rows);
    exporter.shutdown(Duration::from_secs(10));
    let metrics = receiver.received.last_metrics();
    let counted = counter_by(&metrics["egresslens.findings"], "egresslens.finding.kind");
    assert_eq!(counted["waypoint_not_ready"], 1);
    assert_eq!(counted["bypass_direct_response"], 2);
}

/// The binary as an operator runs it: configured by the `OTEL_*` variables alone, following a
/// file; SIGTERM makes it commit, flush its last export and exit 0, with the totals exact.
#[test]
fn the_collector_configured_by_otel_variables_flushes_on_sigterm() {
    let receiver = Receiver::new();
    let addr = receiver.http(SocketAddr::from(([127, 0, 0, 1], 0)));
    let (bytes, truth) = generated(5_000, 3, 0.01);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("waypoint.log");
    std::fs::write(&log, &bytes).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--file"])
        .arg(&log)
        .arg("--store")
        .arg(dir.path().join("store"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "30000")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "500")
        .env("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("a periodic export", || !receiver.received.metrics.lock().unwrap().is_empty());
    let records = || {
        let metrics = receiver.received.last_metrics();
        metrics.get("egresslens.collector.records").map(|m| counter_by(m, "")[""])
    };
    wait_until("every record exported", || records() == Some(truth.good));
    // Rows wait up to --commit-every (30 s) for their commit: SIGTERM makes it now, and only
    // the last export, at exit, can count it.
    let commits = || {
        let metrics = receiver.received.last_metrics();
        metrics.get("egresslens.collector.commits").map_or(0, |m| counter_by(m, "")[""])
    };
    assert_eq!(commits(), 0);
    let terminated = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(terminated.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("exporting metrics to http://"), "{stderr}");
    assert!(stderr.contains("(0 failed)"), "{stderr}");
    assert_eq!(commits(), 1, "the flush at exit carries the commit SIGTERM made");
    assert_metrics_match_truth(&receiver.received, &truth);
    assert_eq!(receiver.received.resource()["deployment.environment.name"], "staging");
}

/// A CA, and a certificate it signed for 127.0.0.1 and localhost, all PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// `https://` endpoints, over both protocols, trusting the CA `OTEL_EXPORTER_OTLP_CERTIFICATE`
/// names; without it (the public roots) the same endpoint is refused, and counted.
#[test]
fn tls_endpoints_work_with_the_configured_ca_and_only_with_it() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca).unwrap();
    let (bytes, truth) = generated(3_000, 9, 0.0);
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let receiver = Receiver::new();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let identity = (pki.cert.as_str(), pki.key.as_str());
        let addr = match protocol {
            Protocol::Grpc => receiver.grpc_tls(any, identity),
            Protocol::HttpProtobuf => receiver.http_tls(any, identity),
        };
        let overrides = Overrides {
            endpoint: Some(format!("https://{addr}")),
            protocol: Some(protocol),
            timeout: Some(Duration::from_secs(30)),
            metric_interval: Some(Duration::from_secs(3600)),
            ..Overrides::default()
        };
        let ca_path = ca.display().to_string();
        let with_ca =
            |name: &str| (name == "OTEL_EXPORTER_OTLP_CERTIFICATE").then(|| ca_path.clone());
        let trusted = OtlpConfig::resolve(with_ca, &overrides).unwrap().unwrap();
        let options = ExportOptions::default();
        let summary = collect_exporting(&bytes, &trusted, &options);
        assert_eq!((summary.metric_failures, summary.spans_dropped), (0, 0), "{protocol:?}");
        assert_metrics_match_truth(&receiver.received, &truth);

        let public_roots = OtlpConfig::resolve(|_| None, &overrides).unwrap().unwrap();
        let refused = collect_exporting(&bytes, &public_roots, &options);
        assert!(
            refused.metric_failures >= 1 && refused.spans_exported == 0,
            "{protocol:?}: {refused:?}"
        );
    }
}
