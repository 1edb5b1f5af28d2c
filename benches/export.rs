//! What OTLP export costs ingest: `collect --once` of a file into a fresh store with export
//! off (B) and on (A: metrics every second and spans at the default sampling, over gRPC with
//! gzip to a receiver in this process), taken in turn, medians of several runs, in one run.
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
    let summary = exporter.map(|e| e.shutdown(Duration::from_secs(30)));
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
    let endpoint = format!("http://{}", receiver.grpc(SocketAddr::from(([127, 0, 0, 1], 0))));
    let overrides = Overrides {
        endpoint: Some(endpoint),
        protocol: Some(Protocol::Grpc),
        metric_interval: Some(Duration::from_secs(1)),
        ..Overrides::default()
    };
    let otlp = OtlpConfig::resolve(|_| None, &overrides).unwrap().unwrap();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    let mut last = None;
    for run_no in 0..runs {
        let (a, summary) = run(&file, Some(&otlp));
        let (b, _) = run(&file, None);
        eprintln!("run {run_no}: export on {a:.2?}, off {b:.2?}");
        on.push(a);
        off.push(b);
        last = summary;
    }
    let (a, b) = (median(on), median(off));
    println!("collect --once, export on (A): {a:.2?} (median of {runs})");
    println!("collect --once, export off (B): {b:.2?}");
    println!("A/B: {:.3}", a.as_secs_f64() / b.as_secs_f64());
    if let Some(s) = last {
        println!(
            "last run exported metrics {} times ({} failed), {} spans ({} dropped)",
            s.metric_exports, s.metric_failures, s.spans_exported, s.spans_dropped
        );
    }
}
