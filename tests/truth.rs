//! The generator's exact ground truth equals what `stats` finds, in every log format, with 2 %
//! damaged lines mixed in: requests, bytes, status classes, reject reasons and the evidence of
//! every finding kind exactly, duration percentiles within the sketch's 1 % relative error.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::BTreeMap;

use egresslens::ingest::{IngestConfig, stats};
use egresslens::source::Input;
use egresslens::stats::{SKETCH_RELATIVE_ACCURACY, StatsReport, Window};
use egresslens::traffic::{GenConfig, GenFormat, Truth, generate};

fn run(format: GenFormat, lines: u64, seed: u64) -> (Truth, StatsReport) {
    run_with(GenConfig { lines, seed, bad: 0.02, format, ..GenConfig::default() })
}

fn run_with(config: GenConfig) -> (Truth, StatsReport) {
    let format = config.format;
    let mut bytes = Vec::new();
    let truth = generate(&config, &mut bytes).unwrap();
    let input = Input::Memory { name: format!("{format:?}"), bytes: bytes.into() };
    // Small blocks so both workers see many of them and merging is exercised.
    let ingest = IngestConfig { workers: 2, block_bytes: 256 * 1024, ..IngestConfig::default() };
    let report = stats(&[input], &ingest).unwrap().report(Window::All, None);
    (truth, report)
}

fn assert_matches(truth: &Truth, report: &StatsReport) {
    assert_eq!(report.lines, truth.lines, "lines");
    assert_eq!(report.records, truth.good, "records");
    assert_eq!(report.ztunnel_connections, truth.ztunnel_connections, "ztunnel connections");
    let mut findings: BTreeMap<&str, u64> = BTreeMap::new();
    for finding in &report.findings {
        *findings.entry(finding.kind.as_str()).or_default() += finding.count;
    }
    assert_eq!(findings, truth.findings, "evidence per finding kind");
    assert_eq!(report.findings_dropped, 0);
    let rejects: Vec<(&str, u64)> = report.rejects.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let expected: Vec<(&str, u64)> = truth.rejects.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(rejects, expected, "reject reasons");
    assert_eq!(report.hosts.len(), truth.hosts.len(), "hosts");
    for host in &report.hosts {
        let want = &truth.hosts[&host.host];
        let name = &host.host;
        assert_eq!(host.requests, want.requests, "{name} requests");
        assert_eq!(host.bytes_sent, want.bytes_sent, "{name} bytes_sent");
        assert_eq!(host.bytes_received, want.bytes_received, "{name} bytes_received");
        let want_status: BTreeMap<String, u64> =
            want.status.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(host.status, want_status, "{name} status classes");
        assert_eq!(host.tls_originated, want.tls_originated, "{name} tls_originated");
        let got = host.duration_ms.expect("every host has durations");
        let exact = &want.duration_ms;
        assert_eq!(got.max, f64::from(exact.max), "{name} max");
        for (q, got, exact) in
            [("p50", got.p50, exact.p50), ("p90", got.p90, exact.p90), ("p99", got.p99, exact.p99)]
        {
            let bound = f64::from(exact) * SKETCH_RELATIVE_ACCURACY;
            assert!((got - f64::from(exact)).abs() <= bound, "{name} {q}: {got} vs {exact}");
        }
    }
}

#[test]
fn json_lines_match_truth_exactly() {
    let (truth, report) = run(GenFormat::Json, 120_000, 11);
    assert!(truth.bad.values().sum::<u64>() > 2_000, "damage is mixed in");
    assert!(truth.rejects.contains_key("too_long"), "a 2 MiB line is included");
    assert_matches(&truth, &report);
}

#[test]
fn cri_lines_with_partial_chunks_match_truth() {
    let (truth, report) = run(GenFormat::Cri, 30_000, 12);
    assert!(truth.physical_lines > truth.lines, "the 2 MiB line came as P chunks");
    assert_matches(&truth, &report);
}

#[test]
fn kubectl_timestamped_lines_match_truth() {
    let (truth, report) = run(GenFormat::Kubectl, 30_000, 13);
    assert_matches(&truth, &report);
}

#[test]
fn istio_text_lines_match_truth() {
    let (truth, report) = run(GenFormat::Text, 30_000, 14);
    assert_matches(&truth, &report);
}

#[test]
fn incidents_are_found_as_the_truth_counts_them() {
    for format in [GenFormat::Cri, GenFormat::Text] {
        let config = GenConfig {
            lines: 40_000,
            seed: 15,
            bad: 0.01,
            format,
            incidents: true,
            ..GenConfig::default()
        };
        let (truth, report) = run_with(config);
        let kinds: Vec<&str> = truth.findings.keys().copied().collect();
        assert_eq!(
            kinds,
            [
                "blocked_egress",
                "bypass_ztunnel_direct",
                "tls_not_originated",
                "tls_origination_failing",
                "unregistered_egress"
            ],
            "{format:?}"
        );
        assert_matches(&truth, &report);
    }
}
