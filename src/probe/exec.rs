//! Probes from inside a workload: `curl -sS -I http://HOST/` run in one of its pods through
//! the Kubernetes exec API (a WebSocket offering `v5.channel.k8s.io`, then
//! `v4.channel.k8s.io`: kube-rs speaks both and the API server picks), its output classified
//! like saved output. The request leaves from the workload's own network namespace, so ztunnel
//! captures it as it captures the application's: the walkthrough's `kubectl exec deploy/sleep
//! -- curl -sI http://aliyun.com`.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{AttachParams, ListParams};
use tokio::io::AsyncReadExt;

use super::{Classified, Verdict, parse_blocks};

/// Why a workload could not be probed from.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0:?} is not a workload: say pod/NAME, deployment/NAME or NAME (a pod)")]
    BadWorkload(String),
    #[error("cannot look up {what} in namespace {namespace}: {reason}")]
    Lookup { what: String, namespace: String, reason: String },
    #[error(
        "{what} selects pods by matchExpressions, which this probe does not evaluate: name a pod (pod/NAME)"
    )]
    Selector { what: String },
    #[error("{what} in namespace {namespace} has no running, ready pod to probe from")]
    NoReadyPod { what: String, namespace: String },
}

/// Where probes are sent from: a pod, or one ready pod of a Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Pod(String),
    Deployment(String),
}

impl Workload {
    /// `pod/NAME`, `deployment/NAME` (`deploy/`, `deployments/`), or a pod's bare name, as
    /// kubectl takes them.
    pub fn parse(text: &str) -> Result<Workload, ExecError> {
        let bad = || ExecError::BadWorkload(text.to_owned());
        let (kind, name) = text.split_once('/').unwrap_or(("pod", text));
        if name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        match kind {
            "pod" | "pods" | "po" => Ok(Workload::Pod(name.to_owned())),
            "deployment" | "deployments" | "deploy" => Ok(Workload::Deployment(name.to_owned())),
            _ => Err(bad()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Workload::Pod(name) => format!("pod/{name}"),
            Workload::Deployment(name) => format!("deployment/{name}"),
        }
    }
}

/// A pod to probe from, and the container the command runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
}

/// The pod `workload` stands for: itself, or the first (by name) running and ready pod its
/// Deployment selects. Its container: `container`, else the pod's
/// `kubectl.kubernetes.io/default-container`, else its first.
pub async fn resolve(
    client: &kube::Client,
    namespace: &str,
    workload: &Workload,
    container: Option<&str>,
) -> Result<Target, ExecError> {
    let lookup = |error| ExecError::Lookup {
        what: workload.describe(),
        namespace: namespace.to_owned(),
        reason: api_reason(&error),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = match workload {
        Workload::Pod(name) => pods.get(name).await.map_err(lookup)?,
        Workload::Deployment(name) => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let deployment = deployments.get(name).await.map_err(lookup)?;
            let selector = deployment.spec.map(|s| s.selector).unwrap_or_default();
            if selector.match_expressions.is_some_and(|e| !e.is_empty()) {
                return Err(ExecError::Selector { what: workload.describe() });
            }
            let labels: Vec<String> = selector
                .match_labels
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let list = pods.list(&ListParams::default().labels(&labels.join(","))).await;
            let mut candidates: Vec<Pod> =
                list.map_err(lookup)?.items.into_iter().filter(is_ready).collect();
            candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            candidates.into_iter().next().ok_or_else(|| ExecError::NoReadyPod {
                what: workload.describe(),
                namespace: namespace.to_owned(),
            })?
        }
    };
    let default_container = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubectl.kubernetes.io/default-container").cloned())
        .or_else(|| pod.spec.as_ref()?.containers.first().map(|c| c.name.clone()));
    Ok(Target {
        namespace: namespace.to_owned(),
        pod: pod.metadata.name.unwrap_or_default(),
        container: container.map(str::to_owned).or(default_container),
    })
}

/// What the API server said (its `Status` message and code), else the client's error.
pub fn api_reason(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} (HTTP {})", status.message, status.code),
        other => other.to_string(),
    }
}

/// Running, with its `Ready` condition true.
fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    status.phase.as_deref() == Some("Running")
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The most output of one probe kept.
const MAX_OUTPUT: u64 = 64 * 1024;

/// How probes are sent from a pod.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    pub path: String,
    /// curl's `--max-time`; the exec as a whole gets this plus 10 s.
    pub timeout: Duration,
    pub proxy_servers: Vec<String>,
}

impl ExecProbe {
    /// The command run in the pod for `host`.
    pub fn command(&self, host: &str) -> Vec<String> {
        let seconds = self.timeout.as_secs().max(1).to_string();
        let url = format!("http://{host}{}", self.path);
        ["curl", "-sS", "-I", "--max-time", &seconds, &url].map(str::to_owned).to_vec()
    }

    /// Runs curl for `host` in `target` and classifies what it printed; a failure to run it
    /// (no curl, exec refused, no answer in time) is an `error` verdict saying so.
    pub async fn probe(&self, client: &kube::Client, target: &Target, host: &str) -> Classified {
        let started = Instant::now();
        let limit = self.timeout + Duration::from_secs(10);
        let outcome = tokio::time::timeout(limit, self.run(client, target, host)).await;
        let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let mut answer = match outcome {
            Err(_) => Classified::failed(host, format!("no answer from the exec within {limit:?}")),
            Ok(Err(message)) => Classified::failed(host, message),
            Ok(Ok(output)) => {
                let text = format!("### {host}\n{}", output.text());
                let blocks = parse_blocks(&text, &self.proxy_servers);
                match blocks.into_iter().next() {
                    Some(mut answer) if answer.verdict == Verdict::Error => {
                        if let Some(status) = output.failure {
                            let message = answer.error.take().unwrap_or_default();
                            answer.error = Some(format!("{message} ({status})"));
                        }
                        answer
                    }
                    Some(answer) => answer,
                    None => Classified::failed(
                        host,
                        output.failure.unwrap_or_else(|| "no output".to_owned()),
                    ),
                }
            }
        };
        answer.latency_ms = latency_ms;
        answer
    }

    async fn run(
        &self,
        client: &kube::Client,
        target: &Target,
        host: &str,
    ) -> Result<Output, String> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
        let mut params = AttachParams::default().stdin(false).stdout(true).stderr(true);
        if let Some(container) = &target.container {
            params = params.container(container);
        }
        let mut process =
            pods.exec(&target.pod, self.command(host), &params).await.map_err(|e| {
                format!("cannot exec in {}/{}: {}", target.namespace, target.pod, api_reason(&e))
            })?;
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let status = process.take_status();
        let out = process.stdout().map(|s| s.take(MAX_OUTPUT));
        let err = process.stderr().map(|s| s.take(MAX_OUTPUT));
        let read_out = async {
            if let Some(mut out) = out {
                let _ = out.read_to_end(&mut stdout).await;
            }
        };
        let read_err = async {
            if let Some(mut err) = err {
                let _ = err.read_to_end(&mut stderr).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let _ = process.join().await;
        let failure = status
            .filter(|s| s.status.as_deref() == Some("Failure"))
            .map(|s| s.message.unwrap_or_else(|| s.reason.unwrap_or_default()));
        Ok(Output {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            failure,
        })
    }
}

/// What the command printed, and how it ended.
struct Output {
    stdout: String,
    stderr: String,
    /// The API's message when the command failed (a non-zero exit, no such executable).
    failure: Option<String>,
}

impl Output {
    /// The headers, then curl's own error line (`curl: (6) Could not resolve host: …`).
    fn text(&self) -> String {
        let errors = self.stderr.lines().filter(|l| l.starts_with("curl: "));
        let mut text = self.stdout.clone();
        for line in errors {
            text.push('\n');
            text.push_str(line);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_are_named_as_kubectl_names_them() {
        assert_eq!(
            Workload::parse("deployment/sleep").unwrap(),
            Workload::Deployment("sleep".into())
        );
        assert_eq!(Workload::parse("deploy/sleep").unwrap(), Workload::Deployment("sleep".into()));
        assert_eq!(Workload::parse("sleep-7b9f").unwrap(), Workload::Pod("sleep-7b9f".into()));
        assert_eq!(Workload::parse("pod/sleep-7b9f").unwrap(), Workload::Pod("sleep-7b9f".into()));
        assert!(Workload::parse("job/x").is_err());
        assert!(Workload::parse("deployment/").is_err());
    }

    #[test]
    fn the_command_is_a_plain_http_head_with_a_deadline() {
        let probe = ExecProbe {
            path: "/".into(),
            timeout: Duration::from_secs(5),
            proxy_servers: Vec::new(),
        };
        assert_eq!(
            probe.command("aliyun.com"),
            ["curl", "-sS", "-I", "--max-time", "5", "http://aliyun.com/"]
        );
    }
}
