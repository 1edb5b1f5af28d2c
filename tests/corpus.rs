//! Every line of the real-world corpus in `tests/fixtures/real/` (origins in its `sources.md`)
//! either parses into a record or is rejected for the reason named here, line by line.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::path::Path;

use egresslens::ingest::{IngestConfig, stats};
use egresslens::parse::{Entry, Projection, frame, parse_message};
use egresslens::source::Input;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a line must become: a record under this host, or a reject with this reason.
#[derive(Debug, PartialEq)]
enum Outcome {
    Record(&'static str),
    Reject(&'static str),
}

fn outcome(line: &str) -> Outcome {
    match parse_message(frame(line.as_bytes()).msg, Projection::All) {
        Ok(entry) => Outcome::Record(host_of(&entry)),
        Err(reason) => Outcome::Reject(reason.as_str().into_owned().leak()),
    }
}

fn host_of(entry: &Entry<'_>) -> &'static str {
    entry.host().unwrap_or("-").to_owned().leak()
}

fn check(file: &str, expected: &[Outcome]) -> Vec<Entry<'static>> {
    let text: &'static str = fixture(file).leak();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{file}: line count");
    let mut entries = Vec::new();
    for (n, (line, want)) in lines.iter().zip(expected).enumerate() {
        assert_eq!(&outcome(line), want, "{file} line {}", n + 1);
        if let Ok(entry) = parse_message(frame(line.as_bytes()).msg, Projection::All) {
            entries.push(entry);
        }
    }
    entries
}

#[test]
fn envoy_json_lines_all_parse() {
    use Outcome::Record;
    let entries = check(
        "envoy-json.log",
        &[
            // REGISTRY_ONLY-blocked TLS: no authority, no cluster; the original destination.
            Record("13.249.75.75"),
            Record("sapi-tenant-part"),
            Record("keycloak-headless.our_ns.svc.cluster.local"),
            // Inbound passthrough with redacted addresses: no host to name.
            Record("-"),
            Record("llnb-dhub-kafka-zookeeper.weyatech-dev.svc.cluster.local"),
            Record("llnb-dhub-kafka-zookeeper.weyatech-dev.svc.cluster.local"),
            Record("api.agilicus.com"),
        ],
    );
    assert_eq!(entries[0].response_flags.as_deref(), Some("UH"));
    assert_eq!((entries[0].response_code, entries[0].upstream_cluster.as_deref()), (Some(0), None));
    assert_eq!(entries[1].bytes_sent, Some(1_819_807));
    assert_eq!(entries[1].upstream_service_time_ms, Some(56.0));
    // Istio 1.3 untyped: numbers as strings, "-" for missing.
    assert_eq!((entries[2].duration_ms, entries[2].method.as_deref()), (Some(10002.0), None));
    assert_eq!(entries[2].response_flags.as_deref(), Some("UF,URX"));
    assert_eq!(entries[2].istio_policy_status, None);
    assert_eq!(entries[6].response_code, Some(503));
    assert_eq!(
        entries[6].user_agent.as_deref(),
        Some("GoogleStackdriverMonitoring-UptimeChecks(https://cloud.google.com/monitoring)")
    );
}

#[test]
fn envoy_text_lines_all_parse() {
    use Outcome::Record;
    let entries = check(
        "envoy-text.log",
        &[
            Record("httpbin"),
            Record("httpbin"),
            Record("httpbin.org"),
            Record("www.google.com"),
            Record("edition.cnn.com"),
            Record("edition.cnn.com"),
            Record("en.wikipedia.org"),
            Record("outbound_.443_.wildcard_.egressgateway.istio-egress.svc.cluster.local"),
            Record("de.wikipedia.org"),
            Record("outbound_.443_.wildcard_.egressgateway.istio-egress.svc.cluster.local"),
            Record("en.wikipedia.org"),
            Record("de.wikipedia.org"),
            Record("cloud.ibm.com"),
            Record("ratings"),
            Record("ratings"),
            Record("172.18.0.101"),
            Record("172.18.0.101"),
            Record("httpbin"),
            Record("httpbin"),
            // PassthroughCluster to an external Oracle port: the destination IP.
            Record("100.77.28.132"),
            // inbound|12950|| with no authority or SNI: the address it was sent to.
            Record("10.244.0.31"),
            Record("externalservice.com"),
            Record("externalservice.com"),
            Record("test.xxx.com"),
            Record("mns-apiserver.gridarrow.site"),
            Record("mns-apiserver.gridarrow.site"),
            // Behind a log shipper's prefix.
            Record("xxxx.segment.xxx"),
            Record("httpbin"),
        ],
    );
    let waypoint = &entries[13];
    assert_eq!(
        waypoint.upstream_cluster.as_deref(),
        Some("inbound-vip|9080|http|ratings.bookinfo.svc.cluster.local")
    );
    assert_eq!(
        waypoint.upstream_host.as_deref(),
        Some("envoy://connect_originate/10.244.0.22:9080")
    );
    assert_eq!(entries[3].bytes_sent, Some(17766));
    assert_eq!(entries[20].response_flags.as_deref(), Some("UF,URX"));
    assert_eq!(entries[22].response_code, Some(503), "double space before the code");
    assert_eq!(entries[23].protocol.as_deref(), Some("HTTP/1.1"), "glued /HTTP/1.1");
    assert_eq!(entries[4].istio_policy_status, None, "≤1.7 mixer status \"-\"");
    assert_eq!(entries[27].response_code_details, None, "1.8 has no details field");
}

#[test]
fn ztunnel_lines_are_named_as_such() {
    let expected: Vec<Outcome> = (0..8).map(|_| Outcome::Reject("ztunnel_log")).collect();
    check("ztunnel.log", &expected);
}

#[test]
fn curl_header_blocks_are_not_access_logs() {
    let blank = [9, 19, 23, 27, 33, 37, 49];
    let expected: Vec<Outcome> = (1..=60)
        .map(|n| Outcome::Reject(if blank.contains(&n) { "empty" } else { "not_json" }))
        .collect();
    check("curl-headers.txt", &expected);
}

#[test]
fn whole_files_through_the_reader_agree_with_line_by_line() {
    let config = IngestConfig { workers: 2, ..IngestConfig::default() };
    for (file, records, lines) in
        [("envoy-json.log", 7, 7), ("envoy-text.log", 28, 28), ("ztunnel.log", 0, 8)]
    {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(file);
        let result = stats(&[Input::Path(path)], &config).unwrap();
        assert_eq!((result.records, result.lines), (records, lines), "{file}");
        let ztunnel = if file == "ztunnel.log" { 8 } else { 0 };
        assert_eq!(result.ztunnel_connections, ztunnel, "{file}");
        assert!(result.rejects.is_empty(), "{file}: {:?}", result.rejects);
    }
}

/// Every response in `curl-headers.txt` gets the verdict its source describes (see
/// `sources.md`): through an Envoy sidecar (H1–H3), straight from the origin (H4: ambient L4
/// only, H6: a Tengine origin). H5's excerpt elides headers (`...`), and what it shows has no
/// proxy header, so it reads as direct, marked as elided.
#[test]
fn every_saved_header_block_is_classified_as_its_source_says() {
    use egresslens::probe::{DEFAULT_PROXY_SERVERS, parse_blocks};
    let proxies: Vec<String> = DEFAULT_PROXY_SERVERS.iter().map(|s| s.to_string()).collect();
    let blocks = parse_blocks(&fixture("curl-headers.txt"), &proxies);
    // (heading, or "next" for a later response under it; verdict, server, status, elided)
    type Row<'a> = (&'a str, &'a str, Option<&'a str>, Option<u16>, bool);
    let got: Vec<Row<'_>> = blocks
        .iter()
        .map(|b| {
            let heading = b.target.split_whitespace().next().unwrap();
            let nth = if b.target.ends_with("#2") { "#2" } else { "" };
            (
                if nth.is_empty() { heading } else { "next" },
                b.verdict.as_str(),
                b.server.as_deref(),
                b.status,
                b.elided,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("H1", "via_waypoint", Some("envoy"), Some(200), false),
            ("H2", "via_waypoint", Some("envoy"), Some(403), false),
            ("H3", "via_waypoint", Some("envoy"), Some(418), false),
            ("H4", "direct", Some("Werkzeug/3.0.1 Python/3.12.1"), Some(200), false),
            ("H5", "direct", None, Some(301), true),
            ("next", "direct", None, Some(200), true),
            ("H6", "direct", Some("Tengine"), Some(301), false),
            ("next", "direct", Some("Tengine"), Some(301), false),
        ]
    );
    assert_eq!(blocks[0].upstream_service_time_ms, Some(19.0));
    assert_eq!(blocks[2].upstream_service_time_ms, None, "H3 has server: envoy alone");
}
