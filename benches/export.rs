//! What OTLP export costs ingest: `collect --once` of a file into a fresh store with export
//! off (B), with metrics on (A), the same with gzip (Agz), and with metrics and spans at the
//! default sampling on (A2), over gRPC to a receiver in this process; taken in turn, medians
//! of several runs.
//!
//! `cargo bench --bench export -- FILE [RUNS]`; `benches/run.sh` makes the file.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a benchmark

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egresslens::collect::{CollectConfig, Control, collect};
use egresslens::export::config::{OtlpConfig, Overrides, Protocol};
use egresslens::export::{ExportOptions, ExportSummary, Exporter};
use egresslens::source::Input;
use egresslens::store::Store;

#[path = "../tests/support/receiver.rs"]
mod receiver;

/// One `collect --once` into a fresh store; the time includes the exporter's last flush.
fn run(file: &Path, otlp: Option<&OtlpConfig>) -> (Duration, Option<ExportSummary>) {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    let exporter = otlp.map(|otlp| Exporter::start(otlp, &ExportOptions::default()).unwrap());
    let control =
        Control { telemetry: exporter.as_ref().map(Exporter::telemetry), ..Control::default() };
    collect(&Input::Path(file.to_path_buf()), &mut store, &CollectConfig::default(), &control)
        .unwrap();
    drop(control);
    let flushing = Instant::now();
    let summary = exporter.map(|e| e.shutdown(Duration::from_secs(30)));
    if summary.is_some() {
        eprintln!("  the last flush took {:.2?}", flushing.elapsed());
    }
    (start.elapsed(), summary)
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let Some(file) = args.next().map(PathBuf::from) else {
        eprintln!("usage: cargo bench --bench export -- FILE [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(5, |n| n.parse().unwrap());
    let receiver = receiver::Receiver::new();
    receiver.received.metrics.lock().unwrap().count_only = true;
    let endpoint = format!("http://{}", receiver.grpc(SocketAddr::from(([127, 0, 0, 1], 0))));
    let overrides = Overrides {
        endpoint: Some(endpoint),
        protocol: Some(Protocol::Grpc),
        // The default interval is 60 s: a run's metrics go out once, at its end, and that
        // export is in the time measured.
        metric_interval: Some(Duration::from_secs(60)),
        ..Overrides::default()
    };
    let both = OtlpConfig::resolve(|_| None, &overrides).unwrap().unwrap();
    let metrics = OtlpConfig { traces: None, ..both.clone() };
    let mut gzipped = metrics.clone();
    if let Some(signal) = gzipped.metrics.as_mut() {
        signal.gzip = true;
    }
    let (mut a, mut agz, mut a2, mut b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for run_no in 0..runs {
        let (metrics_on, _) = run(&file, Some(&metrics));
        let (metrics_gzip, _) = run(&file, Some(&gzipped));
        receiver.received.metrics.lock().unwrap().requests.clear();
        let (both_on, summary) = run(&file, Some(&both));
        let (off, _) = run(&file, None);
        eprintln!(
            "run {run_no}: metrics {metrics_on:.2?}, with gzip {metrics_gzip:.2?}, \
             metrics+traces {both_on:.2?}, off {off:.2?}"
        );
        a.push(metrics_on);
        agz.push(metrics_gzip);
        a2.push(both_on);
        b.push(off);
        last = summary;
    }
    let (a, agz, a2, b) = (median(a), median(agz), median(a2), median(b));
    println!("collect --once, export off (B):            {b:.2?} (median of {runs})");
    println!("collect --once, metrics export on (A):     {a:.2?}  A/B {:.3}", ratio(a, b));
    println!("collect --once, metrics with gzip (Agz):   {agz:.2?}  Agz/B {:.3}", ratio(agz, b));
    println!("collect --once, metrics + traces on (A2):  {a2:.2?}  A2/B {:.3}", ratio(a2, b));
    // One export a run (the interval is longer than a run): the requests of A2's last.
    let requests = &receiver.received.metrics.lock().unwrap().requests;
    let points: usize = requests.iter().map(|(points, _)| points).sum();
    let bytes: usize = requests.iter().map(|(_, bytes)| bytes).sum();
    let largest = requests.iter().map(|(_, bytes)| bytes).max().unwrap_or(&0);
    println!(
        "a metrics export: {points} data points, {bytes} bytes of protobuf in {} requests \
         (the largest {largest})",
        requests.len()
    );
    if let Some(s) = last {
        println!(
            "A2's last run: metrics exported {} times ({} failed), {} spans ({} dropped)",
            s.metric_exports, s.metric_failures, s.spans_exported, s.spans_dropped
        );
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}
