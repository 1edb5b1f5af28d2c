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
