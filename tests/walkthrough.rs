//! The walkthrough as operators run it, against the stand-in API server (`tests/standin`: a
//! real HTTP server on loopback speaking the Kubernetes API's shapes, exec's WebSocket
//! framing included, as no cluster can run here): probes sent from inside a workload.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

// Its pod-log and fault parts serve tests/kube.rs.
#[allow(dead_code)]
mod standin;

use std::process::Output;

use serde_json::Value;
use standin::{ExecReply, StandIn};

/// `curl -sI http://aliyun.com` in the walkthrough's Step 1: straight from the origin.
const FROM_ORIGIN: &str = "HTTP/1.1 301 Moved Permanently\r\nServer: Tengine\r\nDate: Mon, 18 Aug 2025 09:30:01 GMT\r\nContent-Type: text/html\r\nContent-Length: 278\r\nConnection: keep-alive\r\nLocation: https://aliyun.com/\r\n\r\n";
/// The same in Step 3: through the waypoint.
const FROM_WAYPOINT: &str = "HTTP/1.1 301 Moved Permanently\r\nserver: istio-envoy\r\ndate: Mon, 18 Aug 2025 09:36:30 GMT\r\ncontent-type: text/html\r\ncontent-length: 278\r\nlocation: https://aliyun.com/\r\nx-envoy-upstream-service-time: 23\r\n\r\n";

/// The stand-in on a runtime of its own (kept alive by the caller), and a directory with its
/// kubeconfig.
fn stand_in() -> (tokio::runtime::Runtime, StandIn, tempfile::TempDir) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let standin = runtime.block_on(StandIn::start());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), standin.kubeconfig()).unwrap();
    (runtime, standin, dir)
}

fn egresslens(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(args)
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .output()
        .unwrap()
}

fn json(output: &Output) -> Value {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn curl(answer: &str) -> ExecReply {
    ExecReply { stdout: answer.to_owned(), ..ExecReply::default() }
}

#[test]
fn probes_from_a_deployment_run_curl_in_its_pod_over_exec() {
    let (_runtime, standin, dir) = stand_in();
    standin.add_deployment("default", "sleep");
    standin.add_app_pod("default", "sleep", "10.0.1.7");
    standin.on_exec(|_container, command| match command.last().map(String::as_str) {
        Some("http://aliyun.com/") => curl(FROM_ORIGIN),
        Some("http://api.github.com/") => curl(FROM_WAYPOINT),
        _ => ExecReply {
            stderr: "curl: (6) Could not resolve host: nxdomain.example\n".to_owned(),
            exit_code: 6,
            ..ExecReply::default()
        },
    });
    let probe = |hosts: &[&str]| {
        let args = [&["probe", "--from", "deployment/sleep", "-n", "default", "-o", "json"], hosts];
        json(&egresslens(&dir, &args.concat()))
    };
    let answers = probe(&["aliyun.com", "nxdomain.example"]);
    assert_eq!(answers[0]["verdict"], "direct");
    assert_eq!(answers[0]["server"], "Tengine");
    assert_eq!(answers[0]["target"], "aliyun.com");
    assert_eq!(answers[1]["verdict"], "error");
    let error = answers[1]["error"].as_str().unwrap();
    assert!(error.contains("Could not resolve host") && error.contains("exit code 6"), "{error}");
    let execs = standin.execs();
    assert_eq!(execs[0].pod, "sleep-7b9f8d6c5-x2x7k");
    assert_eq!(execs[0].container, "sleep");
    assert_eq!(execs[0].command, ["curl", "-sS", "-I", "--max-time", "5", "http://aliyun.com/"]);
    assert_eq!(execs[0].protocol, "v5.channel.k8s.io");
    // An API server that speaks only v4: the same answers.
    standin.exec_protocols(vec!["v4.channel.k8s.io"]);
    let answers = probe(&["api.github.com"]);
    assert_eq!(answers[0]["verdict"], "via_waypoint");
    assert_eq!(answers[0]["upstream_service_time_ms"], 23.0);
    assert_eq!(standin.execs().last().unwrap().protocol, "v4.channel.k8s.io");
    // No ready pod, no such deployment: clear errors.
    standin.set_ready("default", "sleep-7b9f8d6c5-x2x7k", false);
    let out = egresslens(&dir, &["probe", "aliyun.com", "--from", "deploy/sleep", "-n", "default"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deployment/sleep in namespace default has no running, ready pod"),
        "{stderr}"
    );
    let out = egresslens(&dir, &["probe", "aliyun.com", "--from", "deployment/nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot look up deployment/nope in namespace default"), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}

const EGRESS: &str = "istio-egress";
const WAYPOINT_POD: &str = "waypoint-5c9d7f6b8d-h7k2x";

/// A recorded-shape object from `tests/fixtures/kube`.
fn fixture(file: &str) -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube").join(file);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What the waypoint writes for a request for `path` (the walkthrough's Step 3 line), now.
fn waypoint_line(path: &str, upstream_port: u16) -> (i64, String) {
    routed_line("aliyun.com", path, upstream_port)
}

/// The same for a request the waypoint routed to `host`.
fn routed_line(host: &str, path: &str, upstream_port: u16) -> (i64, String) {
    let now = egresslens::ingest::now_ns();
    let start = egresslens::parse::time::format_rfc3339_ms(now);
    let line = format!(
        r#"{{"authority_for":"{host}","bytes_received":0,"bytes_sent":239,"downstream_local_address":"240.240.0.3:80","downstream_remote_address":"10.0.1.7:33356","duration":24,"method":"GET","path":"{path}","protocol":"HTTP/1.1","response_code":301,"route_name":"default","start_time":"{start}","upstream_cluster":"inbound-vip|80|http|{host};","upstream_host":"140.205.135.3:{upstream_port}","upstream_service_time":"23","user_agent":"curl/8.8.0"}}"#
    );
    (now, line)
}

fn verify(dir: &tempfile::TempDir) -> (i32, Value) {
    let args = [
        "verify",
        "aliyun.com",
        "--from",
        "deployment/sleep",
        "-n",
        "default",
        "-o",
        "json",
        "--log-wait",
        "3s",
    ];
    let out = egresslens(dir, &args);
    let code = out.status.code().unwrap();
    assert!(code != 2, "{}", String::from_utf8_lossy(&out.stderr));
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

fn statuses(verification: &Value) -> Vec<&str> {
    verification["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

/// The walkthrough step by step: before the ServiceEntry the origin answers (`Server:
/// Tengine`) and no waypoint logs it; after the ServiceEntry and the waypoint the answer and
/// the log line come from the waypoint; after the DestinationRule the request leaves on
/// :443; with the waypoint's pod not ready, traffic goes around it again.
#[test]
fn the_walkthrough_verified_step_by_step() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU8, Ordering};
    let (_runtime, standin, dir) = stand_in();
    standin.serve("networking.istio.io/v1", "serviceentries");
    standin.serve("networking.istio.io/v1", "destinationrules");
    standin.add_deployment("default", "sleep");
    standin.add_app_pod("default", "sleep", "10.0.1.7");
    // 0: no ServiceEntry, 1: ServiceEntry and waypoint, 2: TLS origination, 3: waypoint down.
    let stage = Arc::new(AtomicU8::new(0));
    let (answering, logging) = (stage.clone(), standin.clone());
    standin.on_exec(move |_, command| match answering.load(Ordering::SeqCst) {
        0 | 3 => curl(FROM_ORIGIN),
        n => {
            let url = command.last().unwrap();
            let path = &url[url.find("aliyun.com").unwrap() + "aliyun.com".len()..];
            let line = waypoint_line(path, if n == 1 { 80 } else { 443 });
            logging.log(EGRESS, WAYPOINT_POD, &[line]);
            curl(FROM_WAYPOINT)
        }
    });

    let (code, before) = verify(&dir);
    assert_eq!((code, statuses(&before)), (1, vec!["fail", "fail", "fail", "skip"]), "{before:#}");
    assert!(before["checks"][1]["evidence"].as_str().unwrap().contains("server: Tengine"));

    // Step 2 and 3: a waypoint in its own namespace, the host registered there (port 80 as
    // is, as in Step 3).
    standin.add_namespace(EGRESS, serde_json::json!({"istio.io/use-waypoint": "waypoint"}));
    standin.add_object("gateways", fixture("gateway-waypoint.json"));
    standin.add_pod_of(EGRESS, WAYPOINT_POD, "waypoint");
    let mut entry = fixture("serviceentry-aliyun.json");
    entry["spec"]["ports"][0].as_object_mut().unwrap().remove("targetPort");
    standin.add_object("serviceentries", entry);
    stage.store(1, Ordering::SeqCst);
    let (code, registered) = verify(&dir);
    assert_eq!(
        (code, statuses(&registered)),
        (0, vec!["pass", "pass", "pass", "skip"]),
        "{registered:#}"
    );
    let logged = registered["checks"][2]["evidence"].as_str().unwrap();
    assert!(logged.starts_with(WAYPOINT_POD) && logged.contains("140.205.135.3:80"), "{logged}");

    // Step 4: port 80 sent to 443 with TLS SIMPLE.
    standin.add_object("serviceentries", fixture("serviceentry-aliyun.json"));
    standin.add_object("destinationrules", fixture("destinationrule-aliyun.json"));
    stage.store(2, Ordering::SeqCst);
    let (code, tls) = verify(&dir);
    assert_eq!((code, statuses(&tls)), (0, vec!["pass", "pass", "pass", "pass"]), "{tls:#}");
    assert!(tls["checks"][3]["evidence"].as_str().unwrap().contains("left on :443"));
    let table = egresslens(
        &dir,
        &["verify", "aliyun.com", "--from", "deployment/sleep", "--log-wait", "3s"],
    );
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.starts_with(
            "verify aliyun.com (probe from default/sleep-7b9f8d6c5-x2x7k)\n[PASS] 1. "
        ),
        "{table}"
    );
    assert!(
        table.contains("[PASS] 4. the waypoint originated TLS (upstream port 443)\n"),
        "{table}"
    );
    assert!(table.ends_with("\npassed\n"), "{table}");

    // The waypoint's pod stops being ready: ztunnel sends the traffic straight out.
    standin.set_ready(EGRESS, WAYPOINT_POD, false);
    stage.store(3, Ordering::SeqCst);
    let (code, down) = verify(&dir);
    assert_eq!(code, 1);
    assert_eq!(statuses(&down)[..2], ["fail", "fail"], "{down:#}");
    let not_ready = down["checks"][0]["evidence"].as_str().unwrap();
    assert!(not_ready.contains("has no ready pod"), "{not_ready}");
    let out = egresslens(&dir, &["mesh", "-o", "json"]);
    let mesh = json(&out);
    assert_eq!(mesh["hosts"][0]["problems"][0]["kind"], "waypoint_not_ready");
    // ztunnel's log of the same minutes: the sleep pod's connection went straight to the origin.
    let ztunnel = "2025-08-20T07:58:02.113Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.1.7:40522 src.workload=\"sleep\" src.namespace=\"default\" src.identity=\"spiffe://cluster.local/ns/default/sa/sleep\" dst.addr=140.205.135.3:80 dst.service=\"aliyun.com\" direction=\"outbound\" bytes_sent=78 bytes_recv=386 duration=\"31ms\"\n";
    let log = dir.path().join("ztunnel.log");
    std::fs::write(&log, ztunnel).unwrap();
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["stats", "-o", "json"])
        .arg(&log)
        .output()
        .unwrap();
    let stats = json(&stats);
    assert_eq!(stats["findings"][0]["kind"], "bypass_ztunnel_direct");
    assert_eq!(stats["findings"][0]["source"], "default/sleep");
}

#[test]
fn verify_says_when_it_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    // A kubeconfig naming a port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{port}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {{}}\n"
    );
    std::fs::write(dir.path().join("kubeconfig"), kubeconfig).unwrap();
    let out = egresslens(&dir, &["verify", "aliyun.com", "--from", "deployment/sleep"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the mesh configuration"));
    let out = egresslens(&dir, &["verify", "aliyun.com", "--from", "job/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a workload"));
}

/// `collect --kube --probe-every`: rounds of probes from the workload to every registered
/// host go into the `probes` table, mesh snapshots into `mesh_hosts`, and a direct answer and
/// a waypoint with no ready pod into `findings`; with the mesh saying the waypoint originates
/// TLS for the host, the waypoint's plaintext requests are `tls_not_originated` although none
/// of its requests had TLS originated.
#[test]
fn the_collector_probes_registered_hosts_on_a_schedule() {
    let (_runtime, standin, dir) = stand_in();
    standin.add_deployment("default", "sleep");
    standin.add_app_pod("default", "sleep", "10.0.1.7");
    standin.add_namespace(EGRESS, serde_json::json!({"istio.io/use-waypoint": "waypoint"}));
    standin.add_object("gateways", fixture("gateway-waypoint.json"));
    standin.add_pod_of(EGRESS, WAYPOINT_POD, "waypoint");
    standin.set_ready(EGRESS, WAYPOINT_POD, false);
    standin.add_object("serviceentries", fixture("serviceentry-aliyun.json"));
    standin.add_object("destinationrules", fixture("destinationrule-aliyun.json"));
    standin.on_exec(|_, _| curl(FROM_ORIGIN));
    let plain: Vec<(i64, String)> = (0..3).map(|_| waypoint_line("/", 80)).collect();
    standin.log(EGRESS, WAYPOINT_POD, &plain);
    let store = dir.path().join("store");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--kube", "-n", EGRESS, "--commit-every", "1s", "--probe-every", "1s"])
        .args(["--resolve-sources", "--ztunnel"])
        .args(["--probe-from", "deployment/sleep", "--store"])
        .arg(&store)
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let probes = |sql: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
            .args(["query", "-o", "json", "--store"])
            .arg(&store)
            .arg(sql)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let snapshots = "SELECT count(*) AS n FROM mesh_hosts";
    while probes(snapshots)[0]["n"] == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // After the first snapshot: a host no ServiceEntry registers, and a Kubernetes service.
    let routed = [
        routed_line("api.github.com", "/", 80),
        routed_line("reviews.default.svc.cluster.local", "/", 9080),
    ];
    standin.log(EGRESS, WAYPOINT_POD, &routed);
    let sql = "SELECT host, source, verdict, server, status FROM probes ORDER BY ts";
    let records = "SELECT count(*) AS n FROM access_log";
    let rows = loop {
        let rows = probes(sql);
        let stored = probes(records)[0]["n"] == 5;
        let enough = stored && rows.as_array().is_some_and(|r| r.len() >= 2);
        if enough || std::time::Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(term.unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(rows.as_array().is_some_and(|r| r.len() >= 2), "{rows:#}\n{stderr}");
    assert_eq!(rows[0]["host"], "aliyun.com");
    assert_eq!(rows[0]["source"], "default/sleep-7b9f8d6c5-x2x7k");
    assert_eq!(
        (&rows[0]["verdict"], &rows[0]["server"], &rows[0]["status"]),
        (&"direct".into(), &"Tengine".into(), &301.into())
    );
    assert!(stderr.contains("probe rounds"), "{stderr}");
    let found = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["findings", "-o", "json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let found = json(&found);
    let kinds: Vec<(&str, &str)> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["kind"].as_str().unwrap(), f["source"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("bypass_direct_response", "default/sleep-7b9f8d6c5-x2x7k")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("waypoint_not_ready", "istio-egress/waypoint")), "{kinds:?}");
    // The collector, with every source and round on, asked for no more than `deploy/` grants,
    // and `deploy/` grants nothing it did not ask for.
    let granted = granted(&["deploy/base/rbac.yaml", "deploy/probes/role.yaml"]);
    let needed = standin.permissions();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(missing.is_empty(), "deploy/ does not grant {missing:?}");
    // Getting a pod by name is for `--probe-from pod/NAME`; this collector probes from a
    // deployment.
    let by_name = (String::new(), "pods".to_owned(), "get".to_owned());
    let unused: Vec<_> = granted.difference(&needed).filter(|p| **p != by_name).collect();
    assert!(unused.is_empty(), "deploy/ grants {unused:?}, which the collector never asked for");
    let plaintext = found.as_array().unwrap().iter().find(|f| f["kind"] == "tls_not_originated");
    assert_eq!(plaintext.unwrap()["count"], 3, "{found:#}");
    let unregistered: Vec<&Value> =
        found.as_array().unwrap().iter().filter(|f| f["kind"] == "unregistered_egress").collect();
    assert_eq!(unregistered.len(), 1, "{found:#}");
    assert_eq!(unregistered[0]["host"], "api.github.com");
    assert_eq!(unregistered[0]["origin"], "istio-egress/waypoint-5c9d7f6b8d-h7k2x");
    let mesh = probes(
        "SELECT host, waypoint, waypoint_ready_pods, tls_origination, ports, problems FROM mesh_hosts LIMIT 1",
    );
    assert_eq!(
        mesh[0],
        serde_json::json!({"host": "aliyun.com", "waypoint": "istio-egress/waypoint",
            "waypoint_ready_pods": 0, "tls_origination": true, "ports": "80→443 SIMPLE, 443",
            "problems": "waypoint_not_ready"})
    );
}

/// The (API group, resource, verb) triples the rules of these Role and ClusterRole files
/// grant. Our own files, written in one style: each rule's `apiGroups`, `resources` and
/// `verbs` as flow lists on lines of their own.
fn granted(files: &[&str]) -> std::collections::BTreeSet<standin::Permission> {
    let list = |line: &str, key: &str| -> Option<Vec<String>> {
        let rest = line.trim().trim_start_matches("- ").strip_prefix(key)?.strip_prefix(':')?;
        let inner = rest.trim().strip_prefix('[')?.strip_suffix(']')?;
        Some(inner.split(',').map(|v| v.trim().trim_matches('"').to_owned()).collect())
    };
    let mut granted = std::collections::BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let (mut groups, mut resources) = (Vec::new(), Vec::new());
        for line in text.lines() {
            if let Some(g) = list(line, "apiGroups") {
                groups = g;
            } else if let Some(r) = list(line, "resources") {
                resources = r;
            } else if let Some(verbs) = list(line, "verbs") {
                for group in &groups {
                    for resource in &resources {
                        for verb in &verbs {
                            granted.insert((group.clone(), resource.clone(), verb.clone()));
                        }
                    }
                }
            }
        }
    }
    assert!(granted.len() > 5, "the rules did not parse: {granted:?}");
    granted
}
