//! The collector's status API over real HTTP on 127.0.0.1 (port 0): health and readiness,
//! the snapshot's shape and figures against `stats` on the same lines, the tail's filter,
//! and the bearer token.

#![allow(clippy::unwrap_used)] // tests

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use egresslens::collect::{CollectConfig, Control, collect};
use egresslens::ingest::{self, IngestConfig};
use egresslens::live::Live;
use egresslens::serve::StatusServer;
use egresslens::source::Input;
use egresslens::stats::{StatsConfig, Window};
use egresslens::store::Store;
use egresslens::traffic::{GenConfig, generate};
use serde_json::Value;

/// An HTTP/1.1 answer: status, whether its body came chunked, and the body.
struct Answer {
    status: u16,
    body: String,
}

/// Sends `GET path` (with `token` as a bearer token) and reads the answer; a chunked body
/// is read until `enough` holds for what has come, or it ends.
fn get_until(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    enough: impl Fn(&str) -> bool,
) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut chunked = false;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        chunked |= line.to_ascii_lowercase().starts_with("transfer-encoding: chunked");
    }
    let mut body = String::new();
    if !chunked {
        reader.read_to_string(&mut body).unwrap();
        return Answer { status, body };
    }
    while !enough(&body) {
        let mut size = String::new();
        if reader.read_line(&mut size).unwrap() == 0 {
            break;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).unwrap();
        body.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
    }
    Answer { status, body }
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    get_until(addr, path, token, |_| false)
}

/// Generated lines (with incidents and some malformed ones) collected with the live view on,
/// and the server over it.
fn collected(token: Option<&str>) -> (StatusServer, Vec<u8>, tempfile::TempDir) {
    let mut bytes = Vec::new();
    let config =
        GenConfig { lines: 20_000, seed: 3, incidents: true, bad: 0.01, ..GenConfig::default() };
    generate(&config, &mut bytes).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(dir.path()).unwrap();
    let control = Arc::new(Control::default());
    let live = Arc::new(Live::new(StatsConfig::default()));
    let server = StatusServer::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        token.map(str::to_owned),
        live.clone(),
        control.clone(),
    )
    .unwrap();
    control.live.set(live.clone()).unwrap();
    // Not ready before the store and the sources are.
    assert_eq!(get(server.addr, "/readyz", token).status, 503);
    live.readiness.store.store(true, std::sync::atomic::Ordering::Relaxed);
    let input = Input::Memory { name: "generated".into(), bytes: bytes.clone().into() };
    let collect_config =
        CollectConfig { chunk_bytes: 64 * 1024, workers: 2, ..CollectConfig::default() };
    collect(&input, &mut store, &collect_config, &control).unwrap();
    (server, bytes, dir)
}

#[test]
fn the_snapshot_has_the_stats_keys_and_figures_of_stats_on_the_same_lines() {
    let (server, bytes, _dir) = collected(None);
    assert_eq!(get(server.addr, "/healthz", None).status, 200);
    let ready = get(server.addr, "/readyz", None);
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));

    let answer = get(server.addr, "/api/v1/snapshot", None);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let snapshot: Value = serde_json::from_str(&answer.body).unwrap();
    let input = Input::Memory { name: "generated".into(), bytes: bytes.into() };
    let stats = ingest::stats(&[input], &IngestConfig::default()).unwrap();
    let expected = serde_json::to_value(stats.report(Window::All, None)).unwrap();
    for key in ["window", "lines", "records", "rejects"] {
        assert_eq!(snapshot[key], expected[key], "{key}");
    }
    // The same findings and counts (which line is a finding's evidence depends on the order
    // chunks merged in).
    let findings = |v: &Value| {
        let mut all: Vec<String> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| format!("{} {} {} {}", f["kind"], f["host"], f["source"], f["count"]))
            .collect();
        all.sort();
        all
    };
    assert_eq!(findings(&snapshot), findings(&expected));
    let hosts = snapshot["hosts"].as_array().unwrap();
    let wanted = expected["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), wanted.len());
    for (host, want) in hosts.iter().zip(wanted) {
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(host), keys(want), "the keys of stats -o json");
        for key in ["host", "requests", "bytes_sent", "bytes_received", "status", "errors"] {
            assert_eq!(host[key], want[key], "{key} of {}", want["host"]);
        }
    }
    assert_eq!(snapshot["ready"], true);
    assert_eq!(snapshot["collector"]["lines"], expected["lines"]);
    let sources = snapshot["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    assert_eq!(sources[0]["records"], expected["records"]);

    let closer: Value = serde_json::from_str(
        &get(server.addr, "/api/v1/snapshot?window=5m&host=aliyun.com", None).body,
    )
    .unwrap();
    assert_eq!(closer["detail"]["host"], "aliyun.com");
    let requests = closer["detail"]["requests"].as_array().unwrap();
    assert!(requests.iter().map(|n| n.as_u64().unwrap()).sum::<u64>() > 0, "{closer}");
    let upstreams = closer["detail"]["upstreams"].as_array().unwrap();
    assert!(!upstreams.is_empty() && upstreams.len() <= 8, "{closer}");
    assert!(upstreams[0]["value"].as_str().unwrap().contains(':'), "an IP:port");
    assert!(snapshot.get("detail").is_none(), "no detail unless asked");
    let windowed: Value =
        serde_json::from_str(&get(server.addr, "/api/v1/snapshot?window=5m", None).body).unwrap();
    assert_eq!(windowed["window"], "5m");
    // Windows count response flags too (the hosts table's FLAG column in every window).
    let flagged = windowed["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["response_flags"].as_object().is_some_and(|f| !f.is_empty()));
    assert!(flagged.count() > 0, "{windowed}");
    let bad = get(server.addr, "/api/v1/snapshot?window=2d", None);
    assert_eq!((bad.status, bad.body.as_str()), (400, "window: use 1m, 5m, 1h or all\n"));
}

/// `top` asks for the first hosts of its filter and sort only: the same hosts, in the same
/// order, as the whole list sorted; the findings of the hosts the filter takes.
#[test]
fn the_snapshot_lists_the_first_hosts_of_a_filter_and_sort() {
    let (server, _bytes, _dir) = collected(None);
    let snapshot = |query: &str| -> Value {
        let answer = get(server.addr, &format!("/api/v1/snapshot?{query}"), None);
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    };
    let names = |v: &Value| -> Vec<String> {
        v["hosts"].as_array().unwrap().iter().map(|h| h["host"].as_str().unwrap().into()).collect()
    };
    let all = snapshot("window=all");
    let mut by_requests: Vec<(u64, String)> = all["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["requests"].as_u64().unwrap(), h["host"].as_str().unwrap().to_owned()))
        .collect();
    let total = by_requests.len();
    assert!(total > 6, "{total}");
    assert_eq!(
        (all["hosts_total"].as_u64(), all["hosts_matched"].as_u64()),
        (Some(total as u64), Some(total as u64))
    );
    // Most requests first, ties by name (as `top` sorts).
    by_requests.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let ordered: Vec<String> = by_requests.into_iter().map(|(_, host)| host).collect();

    let first = snapshot("limit=3&sort=requests");
    assert_eq!(names(&first), ordered[..3]);
    assert_eq!(
        (first["hosts_total"].as_u64(), first["hosts_matched"].as_u64()),
        (Some(total as u64), Some(total as u64))
    );
    let last = snapshot("limit=2&sort=requests&reverse=true");
    let mut fewest = ordered[total - 2..].to_vec();
    fewest.reverse();
    assert_eq!(names(&last), fewest);
    assert_eq!(names(&snapshot("limit=1000")).len(), total, "a limit above the hosts lists all");

    let filtered = snapshot("filter=aliyun&limit=1");
    let matched = names(&all).iter().filter(|h| h.contains("aliyun")).count();
    assert!(matched >= 1);
    assert_eq!(filtered["hosts_matched"].as_u64(), Some(matched as u64));
    assert!(names(&filtered).iter().all(|h| h.contains("aliyun")), "{filtered}");
    let findings = filtered["findings"].as_array().unwrap();
    assert!(findings.iter().all(|f| f["host"].as_str().unwrap().contains("aliyun")));
    let of_aliyun = all["findings"].as_array().unwrap().iter();
    assert_eq!(
        findings.len(),
        of_aliyun.filter(|f| f["host"].as_str().unwrap().contains("aliyun")).count()
    );

    let bad = get(server.addr, "/api/v1/snapshot?sort=latency", None);
    assert_eq!(bad.status, 400);
    assert!(bad.body.starts_with("sort: use one of requests, host"), "{}", bad.body);
    let bad = get(server.addr, "/api/v1/snapshot?filter=status:abc", None);
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn the_tail_streams_the_records_its_filter_takes() {
    let (server, _bytes, _dir) = collected(None);
    let enough = |body: &str| body.lines().count() >= 5;
    let answer = get_until(server.addr, "/api/v1/tail?filter=status:5xx", None, enough);
    assert_eq!(answer.status, 200);
    let records: Vec<Value> =
        answer.body.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() >= 5, "{}", answer.body);
    for record in &records {
        let status = record["status"].as_u64().unwrap();
        assert!((500..600).contains(&status), "{record}");
        assert!(record["host"].is_string() && record["time"].is_string());
    }
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "seq grows: {seqs:?}");
    // A reader coming back asks for what came after the last it saw: nothing twice.
    let after = format!("/api/v1/tail?filter=status:5xx&after={}", seqs[seqs.len() - 3]);
    let again = get_until(server.addr, &after, None, |body| body.lines().count() >= 2);
    let again: Vec<u64> = again
        .body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(again, seqs[seqs.len() - 2..], "only the records after it");
    let bad = get(server.addr, "/api/v1/tail?filter=status:9xx", None);
    assert_eq!((bad.status, bad.body.as_str()), (400, "filter: status:9xx: say 5xx or 503\n"));
}

#[test]
fn a_token_guards_every_path_but_healthz() {
    let (server, _bytes, _dir) = collected(Some("s3cret"));
    assert_eq!(get(server.addr, "/healthz", None).status, 200);
    for path in ["/readyz", "/api/v1/snapshot", "/api/v1/tail"] {
        let refused = get(server.addr, path, None);
        assert_eq!(refused.status, 401, "{path}");
        assert!(refused.body.contains("Authorization: Bearer"), "{}", refused.body);
        assert_eq!(get(server.addr, path, Some("wrong")).status, 401, "{path}");
    }
    assert_eq!(get(server.addr, "/readyz", Some("s3cret")).status, 200);
    assert_eq!(get(server.addr, "/api/v1/snapshot", Some("s3cret")).status, 200);
}
