//! The `egresslens` binary as a user runs it: bad input, stdin, gzip, errors, exit codes and
//! the printed report.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

fn egresslens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_egresslens"))
}

fn run(args: &[&str]) -> Output {
    egresslens().args(args).output().unwrap()
}

fn collect_once(log: &Path, store: &Path) -> Output {
    let (log, store) = (log.to_str().unwrap(), store.to_str().unwrap());
    run(&["collect", "--once", "--file", log, "--store", store])
}

fn json_stats(args: &[&str]) -> Value {
    let out = run(&[&["stats", "-o", "json"], args].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real").join(name)
}

const GOOD: &str = r#"{"authority_for":"aliyun.com","bytes_received":0,"bytes_sent":239,"duration":24,"method":"GET","path":"/","response_code":301,"upstream_cluster":"inbound-vip|80|http|aliyun.com;","upstream_host":"140.205.135.3:80","upstream_service_time":"23"}"#;

/// One line of every kind of damage between good lines; the last line has no newline.
fn damaged_file() -> Vec<u8> {
    let mut f = Vec::new();
    let mut line = |bytes: &[u8]| {
        f.extend_from_slice(bytes);
        f.push(b'\n');
    };
    line(GOOD.as_bytes());
    line(&GOOD.as_bytes()[..GOOD.len() / 2]);
    line(br#"{"authority_for":"aliyun.com","bytes_sent":"12kB"}"#);
    line(b"");
    line(
        &[br#"{"authority_for":"aliyun.com","user_agent":"curl"#.as_slice(), b"\xff\xfe\"}"]
            .concat(),
    );
    let huge = format!(r#"{{"authority_for":"aliyun.com","path":"/{}"}}"#, "a".repeat(2 << 20));
    line(huge.as_bytes());
    line(b"\x00\x13\x88garbage\x01\x02");
    line(b"2025-08-18T09:36:30.123Z\tinfo\tEnvoy proxy is ready");
    line(GOOD.as_bytes());
    f.extend_from_slice(GOOD.as_bytes());
    f
}

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn every_kind_of_bad_line_is_counted_and_good_lines_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), "damaged.log", &damaged_file());
    let report = json_stats(&[path.to_str().unwrap()]);
    assert_eq!(report["lines"], 10);
    assert_eq!(report["records"], 3, "two good lines and the unterminated last one");
    let rejects = &report["rejects"];
    for reason in [
        "truncated",
        "wrong_type:bytes_sent",
        "empty",
        "invalid_utf8",
        "too_long",
        "binary",
        "envoy_log",
    ] {
        assert_eq!(rejects[reason], 1, "{reason}: {rejects}");
    }
    assert_eq!(report["expected_noise"], 2, "empty and envoy_log");
    let host = &report["hosts"][0];
    assert_eq!((host["host"].as_str(), host["requests"].as_u64()), (Some("aliyun.com"), Some(3)));
    assert_eq!(host["bytes_sent"], 717);
    assert_eq!(host["status"]["3xx"], 3);
    assert_eq!(host["duration_ms"]["p50"], 24.0);
}

#[test]
fn windows_cover_the_end_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("egress.log");
    // 50 lines a second for 20 minutes of log time, no damaged lines.
    let args = ["gen", "--lines", "60000", "--rate", "50", "--out", log.to_str().unwrap()];
    assert!(run(&args).status.success());
    let requests = |window: &str| {
        let report = json_stats(&["--window", window, log.to_str().unwrap()]);
        report["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["requests"].as_u64().unwrap())
            .sum::<u64>()
    };
    let (one, five, all) = (requests("1m"), requests("5m"), requests("all"));
    // Poisson arrivals: a minute (rounded out to 10 s slots) holds about 3 000 to 3 500 lines.
    assert!((2_500..4_000).contains(&one), "1m: {one}");
    assert!((14_000..17_000).contains(&five), "5m: {five}");
    assert_eq!(all, 60_000);
}

#[test]
fn max_line_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!(r#"{{"authority":"a.com","path":"/{}"}}"#, "a".repeat(5000));
    let path = write_temp(dir.path(), "long.log", long.as_bytes());
    let report = json_stats(&["--max-line", "4096", path.to_str().unwrap()]);
    assert_eq!(report["rejects"]["too_long"], 1);
    let report = json_stats(&["--max-line", "8192", path.to_str().unwrap()]);
    assert_eq!(report["records"], 1);
}

#[test]
fn stdin_gzip_and_plain_files_agree() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture("envoy-json.log")).unwrap();
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&plain).unwrap();
    let gz_path = write_temp(dir.path(), "any-name.log", &gz.finish().unwrap());
    let from_file = json_stats(&[fixture("envoy-json.log").to_str().unwrap()]);
    let from_gz = json_stats(&[gz_path.to_str().unwrap()]);
    let mut child = egresslens()
        .args(["stats", "-o", "json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&plain).unwrap();
    let out = child.wait_with_output().unwrap();
    let from_stdin: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Findings name the input their evidence came from; everything else is the same.
    let without_origins = |mut stats: Value| {
        for finding in stats["findings"].as_array_mut().unwrap() {
            finding.as_object_mut().unwrap().remove("origin");
        }
        stats
    };
    let (from_file, from_gz, from_stdin) =
        (without_origins(from_file), without_origins(from_gz), without_origins(from_stdin));
    assert_eq!(from_file["records"], 7);
    assert!(!from_file["findings"].as_array().unwrap().is_empty());
    assert_eq!(from_file, from_gz);
    assert_eq!(from_file, from_stdin);
}

#[test]
fn an_input_that_cannot_be_opened_is_a_clear_error() {
    let out = run(&["stats", "/nonexistent/waypoint.log"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read /nonexistent/waypoint.log"), "{stderr}");
    assert!(stderr.contains("No such file"), "{stderr}");
}

#[test]
fn bad_options_are_refused_with_the_value() {
    let out = run(&["stats", "--sort", "latency", "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(r#"unknown --sort "latency""#));
    let out = run(&["gen", "--bad", "1.5"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bad must be between 0 and 1"));
    assert_eq!(run(&["stats", "-o", "yaml"]).status.code(), Some(2));
}

#[test]
fn gen_truth_equals_stats() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("egress.log.gz");
    let truth_path = dir.path().join("truth.json");
    let out = run(&[
        "gen",
        "--lines",
        "3000",
        "--seed",
        "3",
        "--bad",
        "0.05",
        "--format",
        "kubectl",
        "--out",
        log.to_str().unwrap(),
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let truth: Value = serde_json::from_slice(&std::fs::read(&truth_path).unwrap()).unwrap();
    let report = json_stats(&[log.to_str().unwrap()]);
    assert_eq!(report["records"], truth["good"]);
    assert_eq!(report["rejects"], truth["rejects"]);
    for host in report["hosts"].as_array().unwrap() {
        let want = &truth["hosts"][host["host"].as_str().unwrap()];
        for key in ["requests", "bytes_sent", "bytes_received", "status", "tls_originated"] {
            assert_eq!(host[key], want[key], "{key}");
        }
    }
}

#[test]
fn table_report_of_the_text_corpus() {
    let out = run(&["stats", "--sort", "host", fixture("envoy-text.log").to_str().unwrap()]);
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

#[test]
fn csv_report_of_the_json_corpus() {
    let out =
        run(&["stats", "-o", "csv", "--top", "3", fixture("envoy-json.log").to_str().unwrap()]);
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8(out.stdout).unwrap());
}

#[test]
fn demo_shows_hosts_and_every_finding_kind() {
    let out = run(&["demo", "--lines", "5000"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("HOST"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("aliyun.com ")), "{text}");
    let kinds = [
        "bypass_direct_response",
        "bypass_ztunnel_direct",
        "unregistered_egress",
        "blocked_egress",
        "tls_not_originated",
        "tls_origination_failing",
        "waypoint_not_ready",
    ];
    for kind in kinds {
        let row = format!(" {kind} ");
        let finding =
            |l: &str| (l.starts_with("critical ") || l.starts_with("warning ")) && l.contains(&row);
        assert!(text.lines().any(finding), "{kind} missing:\n{text}");
    }
    assert!(
        text.contains("direct        dashscope.aliyuncs.com: HTTP 404, server: Tengine"),
        "{text}"
    );
}

#[test]
fn help_has_examples() {
    let out = run(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Examples:") && text.contains("egresslens stats"), "{text}");
}

/// A small store made the way a user makes one: `gen`, then `collect --once`.
fn small_store(dir: &Path) -> PathBuf {
    let log = dir.join("egress.log");
    let store = dir.join("store");
    assert!(
        run(&["gen", "--lines", "2000", "--seed", "4", "--out", log.to_str().unwrap()])
            .status
            .success()
    );
    let out = collect_once(&log, &store);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2000 records"));
    store
}

#[test]
fn query_prints_json_arrays_and_ndjson_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let sql =
        "SELECT authority, count(*) AS n FROM access_log GROUP BY 1 ORDER BY n DESC, 1 LIMIT 2";
    let out = run(&["query", "--store", store.to_str().unwrap(), "-o", "json", sql]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["authority"], "aliyun.com");
    let out = run(&["query", "--store", store.to_str().unwrap(), "-o", "ndjson", sql]);
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, rows.as_array().unwrap().clone());
    let empty = "SELECT * FROM access_log WHERE authority = 'nowhere.example'";
    let out = run(&["query", "--store", store.to_str().unwrap(), "-o", "json", empty]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
}

#[test]
fn bad_sql_and_writes_are_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let store = store.to_str().unwrap();
    for (sql, says) in [
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM access_log", "nope"),
        ("COPY (SELECT 1) TO 'x.parquet'", "DML not supported: COPY"),
        ("CREATE TABLE t AS SELECT 1", "DDL not supported"),
        ("CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'", "DDL not supported"),
        ("INSERT INTO access_log SELECT * FROM access_log", "DML not supported"),
        ("@no-such-query", "no canned query @no-such-query"),
        ("@host-rate", "needs --param host=VALUE"),
    ] {
        let out = run(&["query", "--store", store, sql]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{sql}: {stderr}");
        assert!(stderr.contains(says), "{sql}: {stderr}");
    }
    assert!(!dir.path().join("x.parquet").exists());
}

#[test]
fn canned_queries_are_listed_and_run_by_name() {
    let out = run(&["query", "--list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("@top-hosts") && text.contains("Which external hosts"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let store = small_store(dir.path());
    let out = run(&[
        "query",
        "--store",
        store.to_str().unwrap(),
        "-o",
        "csv",
        "@host-rate",
        "--param",
        "host=aliyun.com",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8(out.stdout).unwrap().starts_with("minute,requests,status_5xx,avg_ms")
    );
}

#[test]
fn retention_removes_expired_hours_but_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (log, store) = (dir.path().join("egress.log"), dir.path().join("store"));
    // 8 000 lines at one a second: three hours of 2025, in commits of 1 000 rows.
    let make_log = ["gen", "--lines", "8000", "--rate", "1", "--out", log.to_str().unwrap()];
    assert!(run(&make_log).status.success());
    let collect = |extra: &[&str]| {
        let base = ["collect", "--once", "--commit-rows", "1000", "--file", log.to_str().unwrap()];
        run(&[&base[..], &["--store", store.to_str().unwrap()], extra].concat())
    };
    assert!(collect(&[]).status.success());
    let hours = || -> usize {
        std::fs::read_dir(store.join("access_log"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum()
    };
    assert_eq!(hours(), 3);
    let out = collect(&["--retain", "1d"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Every hour has expired, but the one holding the newest commit stays: it is the
    // checkpoint, so the next run still knows where the file was left and reads nothing again.
    assert_eq!(hours(), 1);
    let out = collect(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 records"), "{stderr}");
    assert_eq!(collect(&["--retain", "7 days"]).status.code(), Some(2));
}

#[test]
fn ztunnel_lines_go_to_their_own_table() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let log = fixture("ztunnel.log");
    let out = collect_once(&log, &store);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("0 records, 8 ztunnel connections and 0 rejects"), "{stderr}");
    // The one outbound connection to an address outside the cluster, with no HBONE hop.
    let sql = "SELECT src_workload, dst_ip, dst_port, bytes_recv, duration_ms FROM ztunnel_conn \
               WHERE dst_hbone_addr IS NULL AND direction = 'outbound'";
    let out = run(&["query", "--store", store.to_str().unwrap(), "-o", "csv", sql]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "src_workload,dst_ip,dst_port,bytes_recv,duration_ms\nistio-debug,142.250.191.142,443,8468,73.0\n"
    );
}

#[test]
fn stats_summarises_ztunnel_connections_per_destination() {
    let log = fixture("ztunnel.log");
    let json = json_stats(&[log.to_str().unwrap()]);
    assert_eq!(json["ztunnel_connections"], 8);
    let rows: Vec<(String, u64, u64, u64)> = json["ztunnel_destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let n = |k: &str| d[k].as_u64().unwrap();
            (
                d["destination"].as_str().unwrap().to_owned(),
                n("connections"),
                n("hbone"),
                n("direct"),
            )
        })
        .collect();
    // Outbound only: the inbound halves of the mesh connections are not counted again.
    assert_eq!(
        rows,
        [
            ("reviews.default.svc.cluster.local".to_owned(), 4, 4, 0),
            ("142.250.191.142:443".to_owned(), 1, 0, 1),
            ("productpage.default.svc.cluster.local".to_owned(), 1, 1, 0),
        ]
    );
    let external = &json["ztunnel_destinations"][1];
    assert_eq!(external["bypass"], 1, "direct to an address outside the cluster");
    assert_eq!(json["ztunnel_destinations"][0]["bypass"], 0);
    assert_eq!(external["top_sources"][0]["value"], "istio-addons-ingress/istio-debug");
    assert_eq!(external["bytes_recv"], 8468);
    let table = String::from_utf8(run(&["stats", log.to_str().unwrap()]).stdout).unwrap();
    assert!(table.contains("ZTUNNEL DESTINATION (outbound)"), "{table}");
    // The same connection is a finding: straight out to an address nothing registers.
    let finding = &json["findings"][0];
    assert_eq!(finding["kind"], "unregistered_egress");
    assert_eq!(finding["host"], "142.250.191.142");
    assert_eq!(finding["source"], "istio-addons-ingress/istio-debug");
    assert!(finding["evidence"].as_str().unwrap().contains("142.250.191.142"));
    // Declared inside the cluster, it is neither bypass nor a finding.
    let inside = json_stats(&["--internal-cidr", "142.250.0.0/16", log.to_str().unwrap()]);
    assert_eq!(inside["ztunnel_destinations"][1]["bypass"], 0);
    assert_eq!(inside["findings"], serde_json::json!([]));
}

/// A server on loopback that answers every request with `response` and keeps the requests.
fn answering(response: &'static str) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            let _ = tx.send(String::from_utf8(request).unwrap());
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (address, rx)
}

#[test]
fn probes_tell_an_origin_from_a_waypoint() {
    // The walkthrough's two answers: the origin itself, and the waypoint in front of it.
    let (origin, origin_requests) = answering(
        "HTTP/1.1 301 Moved Permanently\r\nServer: Tengine\r\nDate: Mon, 18 Aug 2025 09:30:01 GMT\r\n\
         Content-Type: text/html\r\nContent-Length: 239\r\nConnection: close\r\nLocation: https://aliyun.com/\r\n\r\n",
    );
    let (waypoint, _) = answering(
        "HTTP/1.1 301 Moved Permanently\r\nserver: istio-envoy\r\ndate: Mon, 18 Aug 2025 09:36:30 GMT\r\n\
         content-type: text/html\r\ncontent-length: 239\r\nlocation: https://aliyun.com/\r\n\
         x-envoy-upstream-service-time: 27\r\n\r\n",
    );
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let out = run(&["probe", "-o", "json", &origin, &waypoint, &closed]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = |i: usize| {
        let a = &answers[i];
        (a["target"].as_str().unwrap(), a["verdict"].as_str().unwrap(), a["server"].as_str())
    };
    assert_eq!(row(0), (origin.as_str(), "direct", Some("Tengine")));
    assert_eq!(row(1), (waypoint.as_str(), "via_waypoint", Some("istio-envoy")));
    assert_eq!(answers[1]["upstream_service_time_ms"], 27.0);
    assert!(answers[1]["latency_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(row(2).1, "error");
    assert!(answers[2]["error"].as_str().unwrap().contains("refused"), "{answers:#}");
    // Plain HTTP, HEAD, with the target as Host: what the walkthrough's curl -sI sends.
    let request = origin_requests.recv().unwrap();
    assert!(request.starts_with("HEAD / HTTP/1.1\r\n"), "{request}");
    assert!(request.contains(&format!("Host: {}\r\n", origin.split(':').next().unwrap())));
}

#[test]
fn probe_classifies_saved_headers_from_stdin() {
    let mut child = egresslens()
        .args(["probe", "--headers", "-", "-o", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"### before\nHTTP/1.1 301 Moved Permanently\nServer: Tengine\n\n### after\nHTTP/1.1 301 Moved Permanently\nserver: envoy\nx-envoy-upstream-service-time: 27\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers[0]["target"], "before");
    assert_eq!(answers[0]["verdict"], "direct");
    assert_eq!(answers[1]["verdict"], "via_waypoint");
    assert_eq!(answers.as_array().unwrap().len(), 2);
}

/// Waypoint records of every kind a finding is read from, and ztunnel connections that
/// bypass: `aliyun.com` has TLS originated (:443) and then not (:80); `plain.example` is
/// plain HTTP throughout, which is no finding.
fn findings_log() -> (String, String) {
    let record = |authority: &str,
                  cluster: &str,
                  upstream: &str,
                  code: u16,
                  flags: &str,
                  t: u32| {
        format!(
            r#"{{"start_time":"2025-08-18T09:36:{t:02}.000Z","authority":"{authority}","method":"GET","path":"/","response_code":{code},"response_flags":"{flags}","upstream_cluster":"{cluster}","upstream_host":"{upstream}","downstream_remote_address":"10.0.1.7:5000"}}"#
        )
    };
    let tls = "inbound-vip|80|http|aliyun.com";
    let first = [
        record("aliyun.com", tls, "140.205.135.3:443", 301, "-", 1),
        record("api.unknown.example", "PassthroughCluster", "93.184.216.34:80", 200, "-", 2),
        record("blocked.example", "BlackHoleCluster", "-", 502, "-", 3),
        record("plain.example", "inbound-vip|80|http|plain.example", "93.184.216.35:80", 200, "-", 4),
        "2025-08-18T09:36:05Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:51240 src.workload=\"sleep\" src.namespace=\"default\" dst.addr=140.205.135.3:80 dst.service=\"aliyun.com\" direction=\"outbound\"".to_owned(),
    ];
    let second = [
        record("aliyun.com", tls, "140.205.135.3:80", 301, "-", 6),
        record("aliyun.com", tls, "140.205.135.3:80", 301, "-", 7),
        record("api.unknown.example", "PassthroughCluster", "93.184.216.34:80", 200, "-", 8),
        r#"{"start_time":"2025-08-18T09:36:09.000Z","authority":"aliyun.com","method":"GET","path":"/","response_code":503,"response_flags":"UF","upstream_cluster":"inbound-vip|80|http|aliyun.com","upstream_host":"140.205.135.3:443","downstream_remote_address":"10.0.1.7:5000","upstream_transport_failure_reason":"TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"}"#.to_owned(),
    ];
    (first.join("\n") + "\n", second.join("\n") + "\n")
}

#[test]
fn findings_in_the_store_equal_those_of_stats() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = findings_log();
    let log = write_temp(dir.path(), "waypoint.log", first.as_bytes());
    let store = dir.path().join("store");
    // Two commits: the second run resumes after the first half.
    assert!(collect_once(&log, &store).status.success());
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(second.as_bytes())
        .unwrap();
    let out = collect_once(&log, &store);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["findings", "--store", store.to_str().unwrap(), "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stats = json_stats(&[log.to_str().unwrap()]);
    // The same findings, counts and times; a tls_not_originated line is the record's own in
    // stats, and its columns in the store.
    let keys = |findings: &Value| -> Vec<Value> {
        let fields = ["kind", "severity", "host", "source", "count", "first_seen", "last_seen"];
        let key = |f: &Value| fields.iter().map(|k| f[*k].clone()).collect();
        findings.as_array().unwrap().iter().map(key).collect()
    };
    assert_eq!(keys(&stored), keys(&stats["findings"]));
    let found: Vec<(&str, &str, u64)> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (f["kind"].as_str().unwrap(), f["host"].as_str().unwrap(), f["count"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        found,
        [
            ("tls_not_originated", "aliyun.com", 2),
            ("bypass_ztunnel_direct", "aliyun.com", 1),
            ("tls_origination_failing", "aliyun.com", 1),
            ("unregistered_egress", "api.unknown.example", 2),
            ("blocked_egress", "blocked.example", 1),
        ]
    );
    let first_seen = stored[3]["first_seen"].as_str().unwrap();
    assert_eq!(
        (first_seen, stored[3]["last_seen"].as_str().unwrap()),
        ("2025-08-18T09:36:02.000Z", "2025-08-18T09:36:08.000Z")
    );
    // The table names what each shows and where its first evidence line came from.
    let out = run(&["findings", "--store", store.to_str().unwrap()]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("plaintext on port 80"), "{table}");
    assert!(
        table.contains("access_log: GET / -> 140.205.135.3:80 (inbound-vip|80|http|aliyun.com)"),
        "{table}"
    );
    let empty = dir.path().join("none");
    let out = run(&["findings", "--store", empty.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store at"), "{out:?}");
}

/// `top` without a terminal prints one snapshot table, for scripts: here of a store's history.
#[test]
fn top_without_a_terminal_prints_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("egress.log");
    let generated = run(&["gen", "--lines", "2000", "--seed", "5", "--out", log.to_str().unwrap()]);
    assert!(generated.status.success());
    let store = dir.path().join("store");
    assert!(collect_once(&log, &store).status.success());
    let top = run(&["top", "--store", store.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    assert!(stdout.contains("aliyun.com"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("HOST") && l.contains("REQS")), "{stdout}");
    // A collector out of reach is said, not waited for.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let away = run(&["top", "--attach", &format!("http://127.0.0.1:{port}")]);
    assert!(!away.status.success());
    let said = String::from_utf8_lossy(&away.stderr);
    assert!(said.contains(&format!("127.0.0.1:{port}")) && said.contains("refused"), "{said}");
    let nothing = run(&["top"]);
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("say what to show"));
}

/// `top` over several files runs the pipeline over all of them: its one table is `stats`'s.
#[test]
fn top_over_several_files_shows_what_stats_says_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    assert!(run(&["gen", "--lines", "1500", "--seed", "3", "--out", a]).status.success());
    let text = ["--format", "text"];
    assert!(
        run(&[&["gen", "--lines", "900", "--seed", "4", "--out", b][..], &text].concat())
            .status
            .success()
    );
    let twice = run(&["top", a, b, a]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("given twice"), "{twice:?}");
    let top = run(&["top", a, b]);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    let stats = run(&["stats", a, b]);
    let shown = String::from_utf8_lossy(&top.stdout);
    assert!(shown.starts_with("2400 lines: 2400 records"), "{shown}");
    assert_eq!(shown, String::from_utf8_lossy(&stats.stdout));
}

/// Secrets given to the collector never reach its output, even when every connection fails:
/// OTLP headers, a password in the OTLP endpoint, a kubeconfig's token.
#[test]
fn secrets_never_reach_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.path().join("egress.log");
    assert!(run(&["gen", "--lines", "500", "--out", log.to_str().unwrap()]).status.success());
    let exporting = egresslens()
        .args(["collect", "--once", "--file", log.to_str().unwrap(), "--store"])
        .arg(dir.path().join("a"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://user:s3cret-url@127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret-header")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "1000")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&exporting.stderr);
    assert!(said.contains("1 failed") && said.contains("user:***@127.0.0.1"), "{said}");

    let kubeconfig = dir.path().join("kubeconfig");
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: \
         http://127.0.0.1:{port}\nusers:\n- name: u\n  user:\n    token: s3cret-token\n\
         contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n"
    );
    std::fs::write(&kubeconfig, config).unwrap();
    let following = egresslens()
        .args(["collect", "--kube", "--listen", "off", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--store")
        .arg(dir.path().join("b"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut stop = std::process::Command::new("kill");
    assert!(stop.args(["-INT", &following.id().to_string()]).status().unwrap().success());
    let out = following.wait_with_output().unwrap();
    let followed = String::from_utf8_lossy(&out.stderr);
    assert!(followed.contains("Connection refused"), "{followed}");
    for text in [&said, &followed] {
        assert!(!text.contains("s3cret"), "a secret was printed: {text}");
    }
}

/// `--redact` takes query strings, user agents and forwarded-for addresses out before
/// anything is stored: records, findings' evidence lines, rejected lines.
#[test]
fn redacted_fields_never_reach_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("egress.log");
    let log_arg = log.to_str().unwrap();
    let generate =
        ["gen", "--lines", "3000", "--seed", "5", "--bad", "0.02", "--incidents", "--out"];
    assert!(run(&[&generate[..], &[log_arg]].concat()).status.success());
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
    let agent = text.split("\"user_agent\":\"").nth(1).unwrap().split('"').next().unwrap();
    assert!(text.contains("?q=") && agent.len() > 3, "the lines have what is redacted");
    let store = dir.path().join("store");
    let store_arg = store.to_str().unwrap();
    let fields = "query,user_agent,x_forwarded_for";
    let collected =
        run(&["collect", "--once", "--redact", fields, "--file", log_arg, "--store", store_arg]);
    assert!(collected.status.success(), "{}", String::from_utf8_lossy(&collected.stderr));
    let count = |sql: &str| {
        let out = run(&["query", "--store", store_arg, "-o", "json", sql]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows[0]["n"].as_i64().unwrap()
    };
    assert!(count("SELECT count(*) AS n FROM access_log") > 2_500);
    assert_eq!(count("SELECT count(*) AS n FROM access_log WHERE path LIKE '%?%'"), 0);
    assert_eq!(count("SELECT count(*) AS n FROM access_log WHERE x_forwarded_for IS NOT NULL"), 0);
    let hashed = "SELECT count(*) AS n FROM access_log WHERE user_agent NOT LIKE 'ua:%'";
    assert_eq!(count(hashed), 0);
    let evidence = format!(
        "SELECT count(*) AS n FROM findings WHERE evidence LIKE '%?q=%' OR evidence LIKE '%{agent}%'"
    );
    assert!(count("SELECT count(*) AS n FROM findings") > 0);
    assert_eq!(count(&evidence), 0);
    let rejected = "SELECT count(*) AS n FROM rejects \
                    WHERE arrow_cast(raw, 'Utf8') <> '(withheld: --redact)'";
    assert!(count("SELECT count(*) AS n FROM rejects") > 0);
    assert_eq!(count(rejected), 0);

    let refused = run(&["collect", "--once", "--redact", "cookie", "--file", log_arg]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("cannot redact \"cookie\""));
}
