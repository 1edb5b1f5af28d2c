//! Full parse of a waypoint JSON log into all-column `access_log` batches (egresslens, one
//! thread) against arrow-json's `ReaderBuilder` decoding the same file with a fixed schema
//! (decode only, one thread). Medians of several runs, measured in one process, one after the
//! other.
//!
//! `cargo bench --bench ingest -- FILE [RUNS]`; `benches/run.sh` makes the file and runs it.

#![allow(clippy::print_stdout, clippy::print_stderr)] // a benchmark reports to the terminal

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_json::ReaderBuilder;
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use egresslens::ingest::{IngestConfig, TableBatch, batches};
use egresslens::source::Input;

/// The generated file's keys with the types its lines hold (`egresslens gen --untyped 0`):
/// the most favourable schema arrow-json can be given.
fn fixed_schema() -> Arc<Schema> {
    let text = |name: &str| Field::new(name, DataType::Utf8, true);
    let int = |name: &str| Field::new(name, DataType::Int64, true);
    Arc::new(Schema::new(vec![
        text("authority"),
        text("authority_for"),
        int("bytes_received"),
        int("bytes_sent"),
        text("connection_termination_details"),
        text("downstream_local_address"),
        text("downstream_peer_uri_san"),
        text("downstream_remote_address"),
        Field::new("duration", DataType::Float64, true),
        text("method"),
        text("path"),
        text("protocol"),
        text("request_id"),
        text("requested_server_name"),
        int("response_code"),
        text("response_code_details"),
        text("response_flags"),
        text("route_name"),
        Field::new("start_time", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        text("upstream_cluster"),
        text("upstream_host"),
        text("upstream_local_address"),
        text("upstream_response_time"),
        text("upstream_service_time"),
        text("upstream_transport_failure_reason"),
        text("user_agent"),
        text("x_forwarded_for"),
    ]))
}

fn egresslens_batches(path: &Path) -> usize {
    let mut rows = 0;
    let config = IngestConfig { workers: 1, ..IngestConfig::default() };
    batches(&Input::Path(path.to_path_buf()), &config, 8192, |batch| {
        if let TableBatch::AccessLog(b) = batch {
            rows += b.num_rows();
        }
    })
    .expect("the bench file is readable");
    rows
}

fn arrow_json_batches(path: &Path) -> usize {
    let file = BufReader::with_capacity(1 << 20, File::open(path).expect("bench file"));
    let reader = ReaderBuilder::new(fixed_schema())
        .with_batch_size(8192)
        .build(file)
        .expect("reader builds");
    reader.map(|b| b.expect("arrow-json decodes the clean bench file").num_rows()).sum()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn measure(runs: usize, f: impl Fn() -> usize) -> (Duration, usize) {
    let mut rows = 0;
    let times = (0..runs)
        .map(|_| {
            let start = Instant::now();
            rows = f();
            start.elapsed()
        })
        .collect();
    (median(times), rows)
}

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let Some(path) = args.first().map(PathBuf::from) else {
        eprintln!("usage: cargo bench --bench ingest -- FILE [RUNS]");
        return;
    };
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let (a, rows_a) = measure(runs, || egresslens_batches(&path));
    let (b, rows_b) = measure(runs, || arrow_json_batches(&path));
    let mb = bytes as f64 / 1e6;
    println!(
        "full parse to Arrow batches, {rows_a} rows, {mb:.0} MB, median of {runs}, 1 thread each"
    );
    println!(
        "  A egresslens all columns  {:>7.3} s  {:>6.0} MB/s",
        a.as_secs_f64(),
        mb / a.as_secs_f64()
    );
    println!(
        "  B arrow-json fixed schema {:>7.3} s  {:>6.0} MB/s  ({rows_b} rows)",
        b.as_secs_f64(),
        mb / b.as_secs_f64()
    );
    println!("  A/B = {:.2}", a.as_secs_f64() / b.as_secs_f64());
}
