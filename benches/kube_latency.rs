//! How long a line a waypoint pod logs takes to show in the status API's snapshot when the
//! collector follows the pod through the Kubernetes API. No cluster runs here, so the API is
//! the tests' stand-in server (tests/standin: a real HTTP server on 127.0.0.1 speaking the
//! API's shapes, streaming a followed log as lines are added). `egresslens collect --kube`
//! runs as a child process; lines are added one at a time at RATE a second and
//! /api/v1/snapshot is polled every 2 ms; a line has arrived when the snapshot's `records`
//! count reaches it. Prints the latency's median, p99 and worst.
//!
//! `cargo bench --bench kube_latency -- [LINES] [RATE]` (default 10000 at 1000 a second).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)] // a benchmark

#[allow(dead_code, unreachable_pub)] // the benchmark uses a part of the tests' server
#[path = "../tests/standin/mod.rs"]
mod standin;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use egresslens::traffic::{GenConfig, generate};
use standin::StandIn;

const NS: &str = "egress";
const POD: &str = "waypoint-a";
const T0: i64 = 1_755_509_790_000_000_000;

/// The body of `GET path` on `addr`, if it answered 200.
fn get(addr: &str, path: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    answer.starts_with(b"HTTP/1.1 200").then(|| answer[end + 4..].to_vec())
}

fn snapshot_records(addr: &str) -> u64 {
    let body = get(addr, "/api/v1/snapshot").expect("the snapshot answers");
    let snapshot: serde_json::Value = serde_json::from_slice(&body).unwrap();
    snapshot["records"].as_u64().unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let lines: usize = args.next().map_or(10_000, |a| a.parse().unwrap());
    let rate: f64 = args.next().map_or(1_000.0, |a| a.parse().unwrap());

    let mut bytes = Vec::new();
    generate(&GenConfig { lines: lines as u64, seed: 3, ..GenConfig::default() }, &mut bytes)
        .unwrap();
    let generated: Vec<(i64, String)> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, line)| (T0 + i as i64 * 1_000_000, line.to_owned()))
        .collect();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let standin = runtime.block_on(StandIn::start());
    standin.add_pod(NS, POD);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut collector = Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--kube", "--namespace", NS, "--listen", &addr, "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--store")
        .arg(dir.path().join("store"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = Instant::now();
    while get(&addr, "/readyz").is_none() {
        assert!(ready.elapsed() < Duration::from_secs(30), "the collector did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    let start = Instant::now();
    let due = move |i: usize| start + Duration::from_secs_f64(i as f64 / rate);
    let logged: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..lines).map(|_| OnceLock::new()).collect());
    let writer = std::thread::spawn({
        let (standin, logged) = (standin.clone(), logged.clone());
        move || {
            for (i, line) in generated.iter().enumerate() {
                std::thread::sleep(due(i).saturating_duration_since(Instant::now()));
                logged[i].set(Instant::now()).unwrap();
                standin.log(NS, POD, std::slice::from_ref(line));
            }
        }
    });
    let mut latencies = Vec::with_capacity(lines);
    let deadline = due(lines) + Duration::from_secs(30);
    while latencies.len() < lines && Instant::now() < deadline {
        let records = snapshot_records(&addr) as usize;
        let now = Instant::now();
        while latencies.len() < records.min(lines) {
            // Counted, so logged: the writer notes the time just before adding the line.
            let logged = logged[latencies.len()].get().copied().unwrap_or(now);
            latencies.push(now.saturating_duration_since(logged));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    writer.join().unwrap();
    collector.kill().unwrap();
    collector.wait().unwrap();
    assert_eq!(latencies.len(), lines, "not every line reached the snapshot");
    latencies.sort();
    let ms = |q: f64| latencies[((q * lines as f64) as usize).min(lines - 1)].as_secs_f64() * 1e3;
    println!(
        "{lines} lines at {rate}/s, logged by a pod behind the stand-in API server -> /api/v1/snapshot:"
    );
    println!("  median {:.0} ms, p99 {:.0} ms, worst {:.0} ms", ms(0.5), ms(0.99), ms(1.0));
}
