//! The whole collector against DuckDB, as processes, in turn: `egresslens collect --once` of a
//! file with everything on — the Parquet store, the live view's stats (`--listen`), findings,
//! OTLP metrics and traces over gRPC to a receiver in this process — against DuckDB turning
//! the same file into one zstd Parquet file (`COPY (SELECT * FROM read_ndjson(…))`, its
//! nearest equivalent: it keeps no stats, findings or export). Prints medians, the ratio of
//! medians and the peak RSS of each, from `/usr/bin/time`.
//!
//! `cargo bench --bench e2e -- FILE PYTHON [RUNS]`, PYTHON having the duckdb module
//! (`benches/run-all` passes its venv's).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a benchmark

#[path = "../tests/support/receiver.rs"]
mod receiver;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `command` under `/usr/bin/time`; returns (seconds, peak RSS in MiB).
fn timed(command: Command, out: &Path) -> (f64, u64) {
    let mut time = Command::new("/usr/bin/time");
    time.args(["-f", "%e %M", "-o"]).arg(out).arg(command.get_program());
    time.args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            time.env(key, value);
        }
    }
    let status = time.stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "{:?} failed", command.get_program());
    let text = std::fs::read_to_string(out).unwrap();
    let mut fields = text.lines().last().unwrap().split_whitespace();
    let seconds: f64 = fields.next().unwrap().parse().unwrap();
    let kib: u64 = fields.next().unwrap().parse().unwrap();
    (seconds, kib / 1024)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (Some(file), Some(python)) = (args.next(), args.next()) else {
        eprintln!("usage: cargo bench --bench e2e -- FILE PYTHON [RUNS]");
        std::process::exit(2);
    };
    let runs: usize = args.next().map_or(5, |r| r.parse().unwrap());
    let receiver = receiver::Receiver::new();
    let addr = receiver.grpc(SocketAddr::from(([127, 0, 0, 1], 0)));

    let dir = tempfile::tempdir().unwrap();
    let (store, parquet, time) =
        (dir.path().join("store"), dir.path().join("duck.parquet"), dir.path().join("time"));
    let copy = format!(
        "import duckdb; duckdb.sql('SET enable_progress_bar = false'); \
         duckdb.sql(\"COPY (SELECT * FROM read_ndjson('{file}')) TO '{}' \
         (FORMAT parquet, COMPRESSION zstd)\")",
        parquet.display()
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut our_peak, mut their_peak) = (0, 0);
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(&store);
        let mut collect = Command::new(env!("CARGO_BIN_EXE_egresslens"));
        collect
            .args(["collect", "--once", "--listen", "127.0.0.1:0", "--file", &file, "--store"])
            .arg(&store)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        let (seconds, mib) = timed(collect, &time);
        ours.push(seconds);
        our_peak = our_peak.max(mib);

        let _ = std::fs::remove_file(&parquet);
        let mut duck = Command::new(&python);
        duck.args(["-c", &copy]);
        let (seconds, mib) = timed(duck, &time);
        theirs.push(seconds);
        their_peak = their_peak.max(mib);
    }
    let spans = receiver.received.spans().len();
    let metrics = !receiver.received.metrics.lock().unwrap().is_empty();
    assert!(metrics && spans > 0, "the receiver got metrics and spans");
    let (a, b) = (median(ours), median(theirs));
    println!(
        "collect --once, store + live stats + findings + OTLP metrics and traces: {a:.2} s, \
         peak RSS {our_peak} MiB ({spans} spans received over {runs} runs)"
    );
    println!("DuckDB COPY read_ndjson -> Parquet (zstd): {b:.2} s, peak RSS {their_peak} MiB");
    println!("A/B {:.2} (medians of {runs}, taken in turn)", a / b);
}
