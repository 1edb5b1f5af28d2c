//! The stand-in Kubernetes API server: a real HTTP server on 127.0.0.1 that kube-rs reaches
//! through a generated kubeconfig, serving the endpoints the collector uses in the API's own
//! shapes (no cluster can run where these tests run):
//!
//! - `GET /api/v1/pods` and `/api/v1/namespaces/{ns}/pods`: list (`PodList` with a
//!   `resourceVersion`) and `watch=true` (a chunked stream of `{"type","object"}` events), with
//!   `labelSelector` (`k=v,…`);
//! - `GET /api/v1/namespaces/{ns}/pods/{name}/log`: `container`, `follow`, `timestamps`
//!   (RFC 3339 with nanoseconds before each line), `sinceTime` (whole seconds, as the kubelet
//!   honours it), streaming appended lines until the container instance ends.
//!
//! - `GET /apis` (discovery: the groups and versions served), and lists and watches of any
//!   custom resource added, at `/apis/{group}/{version}/{plural}` and under
//!   `/namespaces/{ns}/`, a get of one (`…/{plural}/{name}`, Deployments too), and of
//!   `/api/v1/namespaces`;
//! - `GET /api/v1/namespaces/{ns}/pods/{name}/exec?command=…&stdout=true&stderr=true` as a
//!   WebSocket upgrade, negotiating `v5.channel.k8s.io` or `v4.channel.k8s.io` (or only the
//!   ones a test allows) and framing the output as the API server does: one binary message
//!   per write, its first byte the channel (1 stdout, 2 stderr, 3 the `Status` at exit, a
//!   one-byte message per channel when the stream opens), then a close.
//!
//! Faults: watch streams ended, a pod deleted while no watch saw it, a watch answered with
//! `410 Gone` (the API's `ERROR` event with an `Expired` status),
//! log requests answered with 500, a log stream cut after some bytes (mid-line), a log stream
//! that stalls.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use egresslens::parse::time::format_rfc3339_ns;
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

const POD: &str = include_str!("../fixtures/kube/waypoint-pod.json");
/// Where namespaces are kept among the objects.
const NAMESPACES: &str = "v1/namespaces";
/// Watch events kept for replay.
const HISTORY: usize = 10_000;
/// Sent to every open watch stream to end it.
const END_WATCHES: &str = "end";

/// One container instance's log: lines with their kubelet timestamps.
#[derive(Debug, Default)]
struct Instance {
    lines: Vec<(i64, String)>,
    /// The instance has exited: streams end after its last line.
    ended: bool,
}

#[derive(Debug)]
struct PodEntry {
    object: Value,
    /// Deleted: no longer listed, and new log requests get 404, but open streams still get
    /// the lines written before the containers ended.
    deleted: bool,
    /// Logs by restart count.
    instances: BTreeMap<i32, Instance>,
}

#[derive(Debug, Default)]
struct Faults {
    /// Watches still to answer with 410 Gone.
    gone: usize,
    /// Log requests still to answer with 500.
    log_errors: usize,
    /// Log streams still to cut after this many bytes.
    cuts: Vec<usize>,
    /// Log streams still to stall (send what exists, then nothing).
    stalls: usize,
}

struct Cluster {
    pods: BTreeMap<(String, String), PodEntry>,
    version: u64,
    faults: Faults,
    /// Requests seen, by kind: "list", "watch", "log".
    requests: HashMap<&'static str, usize>,
    /// Log requests by pod name.
    pod_logs: HashMap<String, usize>,
    /// The latest watch events with their resourceVersion, replayed to a watch that starts
    /// from an older version (as the API server does).
    history: std::collections::VecDeque<(u64, String)>,
    /// Objects other than pods by `group/version/plural` (namespaces under `v1/namespaces`).
    objects: BTreeMap<String, Vec<Value>>,
    /// What a command run through exec does; `None`: exec answers 403.
    exec: Option<ExecHandler>,
    /// The exec subprotocols the server accepts, preferred first.
    exec_protocols: Vec<&'static str>,
    /// Every exec: the pod, the container, the command and the subprotocol agreed.
    execs: Vec<Exec>,
    /// What each request needs of RBAC: (API group, resource, verb).
    permissions: BTreeSet<Permission>,
}

/// An API group, a resource (`pods/log` for a subresource) and a verb, as RBAC names them.
pub(crate) type Permission = (String, String, String);

/// What RBAC checks a request against, worked out from its method, path and query the way
/// the API server's request info does. Discovery (`/api`, `/apis`) needs nothing.
fn permissions_of(method: &axum::http::Method, uri: &axum::http::Uri) -> Vec<Permission> {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Vec::new(),
    };
    let rest = match rest {
        ["namespaces", _ns, more @ ..] if !more.is_empty() => more,
        rest => rest,
    };
    let watch =
        uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let (resource, verbs): (String, Vec<&str>) = match (rest, method.as_str()) {
        ([plural], "GET") => (plural.to_string(), vec![if watch { "watch" } else { "list" }]),
        ([plural, _name], "GET") => (plural.to_string(), vec![if watch { "watch" } else { "get" }]),
        // exec's WebSocket upgrade is a GET: API servers before 1.30 check `get`, later ones
        // `create`.
        (["pods", _name, "exec"], _) => ("pods/exec".to_owned(), vec!["create", "get"]),
        ([plural, _name, sub], "GET") => (format!("{plural}/{sub}"), vec!["get"]),
        (_, method) => (rest.join("/"), vec![method]),
    };
    let permission = |verb: &str| (group.to_owned(), resource.clone(), verb.to_owned());
    verbs.into_iter().map(permission).collect()
}

/// Notes what each request needs of RBAC.
async fn note_permissions(
    State(standin): State<StandIn>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let needed = permissions_of(request.method(), request.uri());
    standin.cluster.lock().unwrap().permissions.extend(needed);
    next.run(request).await
}

/// What a command run through exec prints, and how it ends.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExecReply {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) exit_code: i32,
}

/// Answers an exec's command (`container`, `command`).
pub(crate) type ExecHandler = Arc<dyn Fn(&str, &[String]) -> ExecReply + Send + Sync>;

/// One exec the server ran.
#[derive(Debug, Clone)]
pub(crate) struct Exec {
    pub(crate) pod: String,
    pub(crate) container: String,
    pub(crate) command: Vec<String>,
    pub(crate) protocol: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("version", &self.version).finish_non_exhaustive()
    }
}

/// The server's handle for tests: change the cluster, inject faults.
#[derive(Debug, Clone)]
pub(crate) struct StandIn {
    cluster: Arc<Mutex<Cluster>>,
    events: broadcast::Sender<String>,
    changed: Arc<Notify>,
    pub(crate) url: String,
}

impl StandIn {
    /// Starts the server on a free loopback port.
    pub(crate) async fn start() -> StandIn {
        let cluster = Cluster {
            pods: BTreeMap::new(),
            version: 1000,
            faults: Faults::default(),
            requests: HashMap::new(),
            pod_logs: HashMap::new(),
            history: std::collections::VecDeque::new(),
            objects: BTreeMap::new(),
            exec: None,
            exec_protocols: vec!["v5.channel.k8s.io", "v4.channel.k8s.io"],
            execs: Vec::new(),
            permissions: BTreeSet::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let standin = StandIn {
            cluster: Arc::new(Mutex::new(cluster)),
            events: broadcast::channel(1024).0,
            changed: Arc::new(Notify::new()),
            url,
        };
        let app = Router::new()
            .route("/api/v1/pods", get(all_pods))
            .route("/api/v1/namespaces/{ns}/pods", get(namespaced_pods))
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
            .route("/api/v1/namespaces", get(namespaces))
            .route("/apis", get(api_groups))
            .route("/apis/{group}/{version}/{plural}", get(all_objects))
            .route("/apis/{group}/{version}/namespaces/{ns}/{plural}", get(namespaced_objects))
            .route("/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}", get(one_object))
            .route("/api/v1/namespaces/{ns}/pods/{name}/exec", get(pod_exec))
            .layer(axum::middleware::from_fn_with_state(standin.clone(), note_permissions))
            .with_state(standin.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        standin
    }

    /// A kubeconfig that points kube-rs here.
    pub(crate) fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
             users:\n- name: tester\n  user:\n    token: stand-in-token\ncontexts:\n- name: standin\n  \
             context:\n    cluster: standin\n    user: tester\ncurrent-context: standin\n",
            self.url
        )
    }

    fn update(&self, kind: &str, ns: &str, name: &str, edit: impl FnOnce(&mut PodEntry)) {
        let mut cluster = self.cluster.lock().unwrap();
        cluster.version += 1;
        let version = cluster.version.to_string();
        let key = (ns.to_owned(), name.to_owned());
        let entry = cluster.pods.entry(key.clone()).or_insert_with(|| PodEntry {
            object: waypoint_pod(ns, name),
            deleted: false,
            instances: BTreeMap::from([(0, Instance::default())]),
        });
        edit(entry);
        entry.object["metadata"]["resourceVersion"] = json!(version);
        let event = json!({"type": kind, "object": entry.object}).to_string();
        if kind == "DELETED" {
            entry.deleted = true;
            for instance in entry.instances.values_mut() {
                instance.ended = true;
            }
        }
        self.publish(&mut cluster, event);
        drop(cluster);
        self.changed.notify_waiters();
    }

    /// Tells the watches, and keeps the event for watches that start from an older version.
    /// Called with the cluster locked, so a watch starting meanwhile misses nothing.
    fn publish(&self, cluster: &mut Cluster, event: String) {
        cluster.history.push_back((cluster.version, event.clone()));
        if cluster.history.len() > HISTORY {
            cluster.history.pop_front();
        }
        let _ = self.events.send(event);
    }

    /// A running waypoint replica.
    pub(crate) fn add_pod(&self, ns: &str, name: &str) {
        self.update("ADDED", ns, name, |_| {});
    }

    /// A running replica of the waypoint (Gateway) `gateway`.
    pub(crate) fn add_pod_of(&self, ns: &str, name: &str, gateway: &str) {
        self.update("ADDED", ns, name, |pod| {
            let labels = &mut pod.object["metadata"]["labels"];
            labels["gateway.networking.k8s.io/gateway-name"] = json!(gateway);
            labels["istio.io/gateway-name"] = json!(gateway);
        });
    }

    /// A pod of an application Deployment (not a waypoint) with the IP `ip`.
    pub(crate) fn add_app_pod(&self, ns: &str, deployment: &str, ip: &str) {
        let (hash, name) = ("7b9f8d6c5", format!("{deployment}-7b9f8d6c5-x2x7k"));
        self.update("ADDED", ns, &name, |pod| {
            let meta = &mut pod.object["metadata"];
            meta["labels"] = json!({"app": deployment, "pod-template-hash": hash});
            meta["ownerReferences"][0]["name"] = json!(format!("{deployment}-{hash}"));
            pod.object["status"]["podIP"] = json!(ip);
            pod.object["status"]["podIPs"] = json!([{"ip": ip}]);
            pod.object["spec"]["containers"][0]["name"] = json!(deployment);
        });
    }

    /// The pod's container exits and starts again: a new instance with an empty log.
    pub(crate) fn restart(&self, ns: &str, name: &str) {
        self.update("MODIFIED", ns, name, |pod| {
            let restart = *pod.instances.keys().last().unwrap();
            pod.instances.get_mut(&restart).unwrap().ended = true;
            pod.instances.insert(restart + 1, Instance::default());
            let status = &mut pod.object["status"]["containerStatuses"][0];
            status["restartCount"] = json!(restart + 1);
            status["lastState"] = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled",
                "startedAt": "2025-08-18T09:30:03Z", "finishedAt": "2025-08-18T10:00:00Z",
                "containerID": "containerd://0f1e2d3c"}});
        });
    }

    pub(crate) fn delete_pod(&self, ns: &str, name: &str) {
        self.update("DELETED", ns, name, |_| {});
    }

    /// Appends lines to the running instance's log.
    pub(crate) fn log(&self, ns: &str, name: &str, lines: &[(i64, String)]) {
        let mut cluster = self.cluster.lock().unwrap();
        let pod = cluster.pods.get_mut(&(ns.to_owned(), name.to_owned())).unwrap();
        let instance = pod.instances.values_mut().last().unwrap();
        instance.lines.extend(lines.iter().cloned());
        drop(cluster);
        self.changed.notify_waiters();
    }

    /// Serves `object` (its `apiVersion` says under which group and version) as `plural`,
    /// replacing one of the same namespace and name; watches see it added or modified.
    pub(crate) fn add_object(&self, plural: &str, object: Value) {
        let key = format!("{}/{plural}", object["apiVersion"].as_str().unwrap());
        self.change_object(&key, object, false);
    }

    pub(crate) fn delete_object(&self, plural: &str, api_version: &str, ns: &str, name: &str) {
        let key = format!("{api_version}/{plural}");
        let object =
            json!({"apiVersion": api_version, "metadata": {"namespace": ns, "name": name}});
        self.change_object(&key, object, true);
    }

    pub(crate) fn add_namespace(&self, name: &str, labels: Value) {
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "uid": format!("uid-ns-{name}"), "labels": labels},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        self.change_object(NAMESPACES, namespace, false);
    }

    /// Adds, replaces or deletes an object under `key` (`group/version/plural`), and tells
    /// the watches.
    fn change_object(&self, key: &str, mut object: Value, delete: bool) {
        let mut cluster = self.cluster.lock().unwrap();
        cluster.version += 1;
        object["metadata"]["resourceVersion"] = json!(cluster.version.to_string());
        let same = |o: &Value| {
            o["metadata"]["namespace"] == object["metadata"]["namespace"]
                && o["metadata"]["name"] == object["metadata"]["name"]
        };
        let objects = cluster.objects.entry(key.to_owned()).or_default();
        let old = objects.iter().position(same).map(|i| objects.remove(i));
        let kind = match (&old, delete) {
            (Some(old), true) => {
                object = old.clone();
                "DELETED"
            }
            (None, true) => return,
            (Some(_), false) => "MODIFIED",
            (None, false) => "ADDED",
        };
        if !delete {
            objects.push(object.clone());
        }
        let event = json!({"type": kind, "object": object, "key": key}).to_string();
        self.publish(&mut cluster, event);
    }

    /// Sets the pod's Ready condition.
    pub(crate) fn set_ready(&self, ns: &str, name: &str, ready: bool) {
        self.update("MODIFIED", ns, name, |pod| {
            for condition in pod.object["status"]["conditions"].as_array_mut().unwrap() {
                if condition["type"] == "Ready" || condition["type"] == "ContainersReady" {
                    condition["status"] = json!(if ready { "True" } else { "False" });
                }
            }
        });
    }

    /// Deletes the pod without telling the watches (as happens while a watch is down): only a
    /// new list shows it is gone.
    pub(crate) fn vanish_pod(&self, ns: &str, name: &str) {
        let mut cluster = self.cluster.lock().unwrap();
        cluster.version += 1;
        let pod = cluster.pods.get_mut(&(ns.to_owned(), name.to_owned())).unwrap();
        pod.deleted = true;
        for instance in pod.instances.values_mut() {
            instance.ended = true;
        }
        drop(cluster);
        self.changed.notify_waiters();
    }

    /// Ends every open watch stream (the client watches again, from its resourceVersion).
    pub(crate) fn end_watches(&self) {
        let _ = self.events.send(END_WATCHES.to_owned());
    }

    pub(crate) fn fail_watches_with_gone(&self, n: usize) {
        self.cluster.lock().unwrap().faults.gone += n;
    }

    pub(crate) fn fail_logs_with_500(&self, n: usize) {
        self.cluster.lock().unwrap().faults.log_errors += n;
    }

    pub(crate) fn cut_next_log_after(&self, bytes: usize) {
        self.cluster.lock().unwrap().faults.cuts.push(bytes);
    }

    pub(crate) fn stall_next_log(&self) {
        self.cluster.lock().unwrap().faults.stalls += 1;
    }

    /// Serves `plural` of `api_version` with no objects yet (the CRD is installed).
    pub(crate) fn serve(&self, api_version: &str, plural: &str) {
        let key = format!("{api_version}/{plural}");
        self.cluster.lock().unwrap().objects.entry(key).or_default();
    }

    /// Runs `handler` for every exec from now on.
    pub(crate) fn on_exec(
        &self,
        handler: impl Fn(&str, &[String]) -> ExecReply + Send + Sync + 'static,
    ) {
        self.cluster.lock().unwrap().exec = Some(Arc::new(handler));
    }

    /// Accepts only these exec subprotocols (an older API server: v4 alone).
    pub(crate) fn exec_protocols(&self, protocols: Vec<&'static str>) {
        self.cluster.lock().unwrap().exec_protocols = protocols;
    }

    /// The execs run so far.
    pub(crate) fn execs(&self) -> Vec<Exec> {
        self.cluster.lock().unwrap().execs.clone()
    }

    /// A Deployment `name` whose pods carry `app: name` (as [`StandIn::add_app_pod`] makes them).
    pub(crate) fn add_deployment(&self, ns: &str, name: &str) {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": name, "image": "curlimages/curl"}]}}}});
        self.add_object("deployments", deployment);
    }

    pub(crate) fn log_requests(&self, pod: &str) -> usize {
        self.cluster.lock().unwrap().pod_logs.get(pod).copied().unwrap_or(0)
    }

    /// What the requests so far needed of RBAC.
    pub(crate) fn permissions(&self) -> BTreeSet<Permission> {
        self.cluster.lock().unwrap().permissions.clone()
    }

    pub(crate) fn requests(&self, kind: &str) -> usize {
        self.cluster.lock().unwrap().requests.get(kind).copied().unwrap_or(0)
    }
}

fn waypoint_pod(ns: &str, name: &str) -> Value {
    let mut pod: Value = serde_json::from_str(POD).unwrap();
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["uid"] = json!(format!("uid-{ns}-{name}"));
    pod
}

/// `k=v,k2=v2` against the pod's labels.
fn selected(pod: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| {
        let (key, value) = term.split_once('=').unwrap();
        pod["metadata"]["labels"][key].as_str() == Some(value.trim_start_matches('='))
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code})
}

async fn all_pods(
    State(standin): State<StandIn>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    pods(standin, None, query)
}

async fn namespaced_pods(
    State(standin): State<StandIn>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    pods(standin, Some(ns), query)
}

fn pods(standin: StandIn, ns: Option<String>, query: HashMap<String, String>) -> Response {
    let selector = query.get("labelSelector").cloned();
    let in_scope = move |pod: &Value| {
        pod["kind"] == "Pod"
            && ns.as_deref().is_none_or(|ns| pod["metadata"]["namespace"] == ns)
            && selected(pod, selector.as_ref())
    };
    let mut cluster = standin.cluster.lock().unwrap();
    if query.get("watch").map(String::as_str) != Some("true") {
        *cluster.requests.entry("list").or_default() += 1;
        let items = cluster.pods.values().filter(|p| !p.deleted).map(|p| p.object.clone());
        let items: Vec<Value> = items.filter(|p| in_scope(p)).collect();
        let list = json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": cluster.version.to_string()}, "items": items});
        return axum::Json(list).into_response();
    }
    *cluster.requests.entry("watch").or_default() += 1;
    if cluster.faults.gone > 0 {
        cluster.faults.gone -= 1;
        let gone = status(410, "Expired", "too old resource version: 1000 (1042)");
        let event = json!({"type": "ERROR", "object": gone}).to_string() + "\n";
        return Body::from(event).into_response();
    }
    let since = since(&query);
    watch_stream(&standin, cluster, since, move |event| in_scope(&event["object"]))
}

/// The `resourceVersion` a watch starts after (none: only what happens from now on).
fn since(query: &HashMap<String, String>) -> u64 {
    query.get("resourceVersion").and_then(|v| v.parse().ok()).filter(|v| *v > 0).unwrap_or(u64::MAX)
}

/// A watch: the events after `since` from the history, then new ones as they happen, each
/// sent when `keep` says so, until the stream is ended.
fn watch_stream(
    standin: &StandIn,
    cluster: std::sync::MutexGuard<'_, Cluster>,
    since: u64,
    keep: impl Fn(&Value) -> bool + Clone + Send + 'static,
) -> Response {
    let backlog: std::collections::VecDeque<String> =
        cluster.history.iter().filter(|(v, _)| *v > since).map(|(_, e)| e.clone()).collect();
    // Subscribed while the cluster is locked: nothing published falls between the two.
    let events = standin.events.subscribe();
    drop(cluster);
    let stream = futures::stream::unfold((backlog, events), move |(mut backlog, mut events)| {
        let keep = keep.clone();
        async move {
            loop {
                let event = match backlog.pop_front() {
                    Some(event) => event,
                    None => match events.recv().await {
                        Ok(event) if event == END_WATCHES => return None,
                        Ok(event) => event,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                };
                let mut parsed: Value = serde_json::from_str(&event).unwrap();
                if keep(&parsed) {
                    parsed.as_object_mut().unwrap().remove("key");
                    let line = parsed.to_string() + "\n";
                    return Some((Ok::<_, std::io::Error>(line), (backlog, events)));
                }
            }
        }
    });
    Body::from_stream(stream).into_response()
}

async fn pod_log(
    State(standin): State<StandIn>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let key = (ns.clone(), name.clone());
    let (restart, cut, stall) = {
        let mut cluster = standin.cluster.lock().unwrap();
        *cluster.requests.entry("log").or_default() += 1;
        *cluster.pod_logs.entry(name.clone()).or_default() += 1;
        if cluster.faults.log_errors > 0 {
            cluster.faults.log_errors -= 1;
            let error =
                status(500, "InternalError", "an error on the server has prevented the request");
            return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
        }
        let Some(pod) = cluster.pods.get(&key).filter(|p| !p.deleted) else {
            let missing = status(404, "NotFound", &format!("pods \"{name}\" not found"));
            return (StatusCode::NOT_FOUND, axum::Json(missing)).into_response();
        };
        let mut restart = *pod.instances.keys().last().unwrap();
        if query.get("previous").map(String::as_str) == Some("true") {
            if restart == 0 {
                let none = status(400, "BadRequest", "previous terminated container not found");
                return (StatusCode::BAD_REQUEST, axum::Json(none)).into_response();
            }
            restart -= 1;
        }
        // One fault per request: 500s first, then cuts, then stalls.
        let cut =
            if cluster.faults.cuts.is_empty() { None } else { Some(cluster.faults.cuts.remove(0)) };
        let stall = cut.is_none() && cluster.faults.stalls > 0;
        cluster.faults.stalls -= usize::from(stall);
        (restart, cut, stall)
    };
    let since = query.get("sinceTime").map(|t| {
        let since = egresslens::parse::time::parse_rfc3339_ns(t).unwrap();
        assert_eq!(since.rem_euclid(1_000_000_000), 0, "sinceTime {t} has whole seconds");
        since
    });
    let since = since.unwrap_or(i64::MIN);
    let timestamps = query.get("timestamps").map(String::as_str) == Some("true");
    let follow = query.get("follow").map(String::as_str) == Some("true");
    // (next line index, bytes sent)
    let state = (0usize, 0usize);
    let stream = futures::stream::unfold(state, move |(mut next, mut sent)| {
        let standin = standin.clone();
        let key = key.clone();
        async move {
            loop {
                let notified = standin.changed.notified();
                let (chunk, ended) = {
                    let cluster = standin.cluster.lock().unwrap();
                    let instance = cluster.pods.get(&key).and_then(|p| p.instances.get(&restart));
                    let instance = instance?;
                    let mut chunk = String::new();
                    while next < instance.lines.len() {
                        let (ts, line) = &instance.lines[next];
                        next += 1;
                        if *ts < since {
                            continue;
                        }
                        if timestamps {
                            chunk.push_str(&format_rfc3339_ns(*ts));
                            chunk.push(' ');
                        }
                        chunk.push_str(line);
                        chunk.push('\n');
                    }
                    (chunk, instance.ended)
                };
                if !chunk.is_empty() {
                    let mut bytes = chunk.into_bytes();
                    if let Some(cut) = cut {
                        if sent >= cut {
                            return None;
                        }
                        bytes.truncate(cut - sent);
                    }
                    sent += bytes.len();
                    return Some((Ok::<_, std::io::Error>(bytes), (next, sent)));
                }
                if ended || !follow || cut.is_some_and(|c| sent >= c) {
                    return None;
                }
                if stall && next > 0 {
                    std::future::pending::<()>().await;
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
        }
    });
    Body::from_stream(stream).into_response()
}

async fn namespaces(
    State(standin): State<StandIn>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    objects(&standin, NAMESPACES, None, &query)
}

/// Discovery: every group with an object added, its versions, the first one preferred.
async fn api_groups(State(standin): State<StandIn>) -> Response {
    let cluster = standin.cluster.lock().unwrap();
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for key in cluster.objects.keys().filter(|k| k.as_str() != NAMESPACES) {
        let mut parts = key.split('/');
        let (group, version) = (parts.next().unwrap(), parts.next().unwrap());
        let versions = groups.entry(group).or_default();
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({"name": group, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        .into_response()
}

async fn all_objects(
    State(standin): State<StandIn>,
    Path((group, version, plural)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    objects(&standin, &format!("{group}/{version}/{plural}"), None, &query)
}

async fn namespaced_objects(
    State(standin): State<StandIn>,
    Path((group, version, ns, plural)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    objects(&standin, &format!("{group}/{version}/{plural}"), Some(ns), &query)
}

/// A list of the objects under `key` (in `ns`), or with `watch=true` a stream of their changes.
fn objects(
    standin: &StandIn,
    key: &str,
    ns: Option<String>,
    query: &HashMap<String, String>,
) -> Response {
    let in_ns = move |o: &Value| ns.as_deref().is_none_or(|ns| o["metadata"]["namespace"] == ns);
    let mut cluster = standin.cluster.lock().unwrap();
    let watch = query.get("watch").map(String::as_str) == Some("true");
    *cluster.requests.entry(if watch { "watch" } else { "list" }).or_default() += 1;
    if !cluster.objects.contains_key(key) && key != NAMESPACES {
        let missing = status(404, "NotFound", "the server could not find the requested resource");
        return (StatusCode::NOT_FOUND, axum::Json(missing)).into_response();
    }
    if watch && cluster.faults.gone > 0 {
        cluster.faults.gone -= 1;
        let gone = status(410, "Expired", "too old resource version: 1000 (1042)");
        let event = json!({"type": "ERROR", "object": gone}).to_string() + "\n";
        return Body::from(event).into_response();
    }
    if watch {
        let key = key.to_owned();
        let keep = move |event: &Value| event["key"] == key.as_str() && in_ns(&event["object"]);
        return watch_stream(standin, cluster, since(query), keep);
    }
    let items: Vec<&Value> =
        cluster.objects.get(key).into_iter().flatten().filter(|o| in_ns(o)).collect();
    let api_version = key.rsplit_once('/').unwrap().0;
    let kind =
        items.first().map_or("List".to_owned(), |o| format!("{}List", o["kind"].as_str().unwrap()));
    let list = json!({"kind": kind, "apiVersion": api_version,
        "metadata": {"resourceVersion": cluster.version.to_string()}, "items": items});
    axum::Json(list).into_response()
}

async fn one_object(
    State(standin): State<StandIn>,
    Path((group, version, ns, plural, name)): Path<(String, String, String, String, String)>,
) -> Response {
    let cluster = standin.cluster.lock().unwrap();
    let key = format!("{group}/{version}/{plural}");
    let found = cluster.objects.get(&key).into_iter().flatten().find(|o| {
        o["metadata"]["namespace"] == ns.as_str() && o["metadata"]["name"] == name.as_str()
    });
    match found {
        Some(object) => axum::Json(object.clone()).into_response(),
        None => {
            let message = format!("{plural}.{group} \"{name}\" not found");
            (StatusCode::NOT_FOUND, axum::Json(status(404, "NotFound", &message))).into_response()
        }
    }
}

/// `pods/exec`: the command's output over a WebSocket, channel by channel.
async fn pod_exec(
    State(standin): State<StandIn>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let values = |key: &str| -> Vec<String> {
        query.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect()
    };
    let (command, container) = (values("command"), values("container").pop().unwrap_or_default());
    let (handler, protocols, pod) = {
        let cluster = standin.cluster.lock().unwrap();
        let pod = cluster.pods.get(&(ns.clone(), name.clone())).filter(|p| !p.deleted);
        (cluster.exec.clone(), cluster.exec_protocols.clone(), pod.map(|p| p.object.clone()))
    };
    let Some(pod) = pod else {
        let message = format!("pods \"{name}\" not found");
        return (StatusCode::NOT_FOUND, axum::Json(status(404, "NotFound", &message)))
            .into_response();
    };
    let Some(handler) = handler else {
        let message = format!("pods \"{name}\" is forbidden: cannot create resource \"pods/exec\"");
        return (StatusCode::FORBIDDEN, axum::Json(status(403, "Forbidden", &message)))
            .into_response();
    };
    let container = if container.is_empty() {
        pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default().to_owned()
    } else {
        container
    };
    upgrade.protocols(protocols).on_upgrade(move |mut socket| async move {
        let protocol = socket
            .protocol()
            .and_then(|p| p.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let reply = handler(&container, &command);
        standin.cluster.lock().unwrap().execs.push(Exec {
            pod: name,
            container,
            command: command.clone(),
            protocol,
        });
        let frame = |channel: u8, bytes: &[u8]| {
            let mut message = vec![channel];
            message.extend_from_slice(bytes);
            Message::Binary(message.into())
        };
        let exit = if reply.exit_code == 0 {
            json!({"metadata": {}, "status": "Success"})
        } else {
            json!({"metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {}", reply.exit_code),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": reply.exit_code.to_string()}]}})
        };
        let mut messages = vec![frame(1, b""), frame(2, b""), frame(3, b"")];
        // Written in pieces, as a process's output comes.
        for piece in reply.stdout.as_bytes().chunks(64) {
            messages.push(frame(1, piece));
        }
        if !reply.stderr.is_empty() {
            messages.push(frame(2, reply.stderr.as_bytes()));
        }
        messages.push(frame(3, exit.to_string().as_bytes()));
        for message in messages {
            if socket.send(message).await.is_err() {
                return;
            }
        }
        let _ = socket.send(Message::Close(None)).await;
    })
}
