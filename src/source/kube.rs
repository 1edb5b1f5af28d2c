//! Waypoint pods followed through the Kubernetes API: a watch finds the pods by label, one
//! follower per running container instance streams `pods/{name}/log?follow&timestamps`, and
//! after a cut, a stall or an error it reconnects from its cursor and drops the overlap exactly.
//!
//! `sinceTime` has whole-second precision, so a reconnect is served again every line of the
//! cursor's second. The cursor is the timestamp of the last line taken (the kubelet's are in
//! nanoseconds) and how many lines taken carried exactly that timestamp: on a reconnect, lines
//! before it and the first `same` lines at it are the overlap. A line that genuinely repeats,
//! even with the same timestamp, is taken again.
//!
//! A container restart is a new instance (its `restartCount`), followed from its start; the
//! old instance's stream ends when it exits and is read to that end. A deleted pod's followers
//! read to the end of their streams and stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::kube::api::{Api, LogParams};
use ::kube::runtime::watcher;
use ::kube::{Client, ResourceExt};
use futures::{AsyncBufRead, AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::parse::time::parse_rfc3339_ns;
use crate::workloads::{Workload, Workloads, workload_name};

/// Label selecting waypoint pods (Istio 1.18+).
pub const WAYPOINT_SELECTOR: &str = "gateway.istio.io/managed=istio.io-mesh-controller";
/// Tries at reading a previous instance's log before giving it up.
const PREVIOUS_ATTEMPTS: u32 = 5;

/// Labels naming a waypoint pod's Gateway, newest first.
const GATEWAY_LABELS: [&str; 2] =
    ["gateway.networking.k8s.io/gateway-name", "istio.io/gateway-name"];
/// Label selecting ztunnel pods, and their namespace, as Istio installs them.
pub const ZTUNNEL_SELECTOR: &str = "app=ztunnel";
pub const ZTUNNEL_NAMESPACE: &str = "istio-system";
/// The waypoint's Envoy container (ztunnel's container has the same name).
pub const WAYPOINT_CONTAINER: &str = "istio-proxy";

/// What to follow and how.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Namespaces to watch; empty: every namespace (a cluster-wide watch).
    pub namespaces: Vec<String>,
    /// Label selector of the pods.
    pub selector: String,
    /// The container whose log is followed.
    pub container: String,
    /// Only the pods of this waypoint (Gateway name), by either label Istio sets:
    /// `gateway.networking.k8s.io/gateway-name` (1.21+) or `istio.io/gateway-name` (≤1.23).
    pub gateway: Option<String>,
    /// A stream of a running container that sends nothing this long is reconnected.
    pub stall: Duration,
    /// Also watch every pod's IP, to name the workload behind each request's source.
    pub resolve_sources: bool,
    /// The longest wait between reconnects (backoff doubles from 100 ms up to it).
    pub max_backoff: Duration,
    /// Lines are handed over in blocks of about this many bytes…
    pub batch_bytes: usize,
    /// …or after this long, whichever comes first.
    pub batch_wait: Duration,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            namespaces: Vec::new(),
            selector: WAYPOINT_SELECTOR.to_owned(),
            container: WAYPOINT_CONTAINER.to_owned(),
            gateway: None,
            resolve_sources: false,
            stall: Duration::from_secs(60),
            max_backoff: Duration::from_secs(10),
            batch_bytes: 256 * 1024,
            batch_wait: Duration::from_millis(200),
        }
    }
}

/// Where a follower stands (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub ts_ns: i64,
    pub same: u64,
}

impl std::fmt::Display for Cursor {
    /// `<ts_ns>/<same>`, as commits store it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ts_ns, self.same)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{text:?} is not a cursor (<ts_ns>/<same>)");
        let (ts, same) = text.split_once('/').ok_or_else(bad)?;
        Ok(Cursor { ts_ns: ts.parse().map_err(|_| bad())?, same: same.parse().map_err(|_| bad())? })
    }
}

/// One container instance of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Instance {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub restart: i32,
}

impl Instance {
    /// The name its position is stored under: `pod:<namespace>/<pod>/<container>#<restart>`.
    pub fn source_id(&self) -> String {
        format!("pod:{}/{}/{}#{}", self.namespace, self.pod, self.container, self.restart)
    }
}

/// Lines taken from one instance, each with its newline and its timestamp prefix, and the
/// cursor after the last of them.
#[derive(Debug)]
pub struct Lines {
    pub instance: Arc<Instance>,
    pub bytes: Vec<u8>,
    pub cursor: Cursor,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("watching pods ({selector}) failed")]
    Watch {
        selector: String,
        #[source]
        source: watcher::Error,
    },
}

/// What followers need to know of their pod: the restart count of the running instance
/// (`None` while no instance runs) and whether the pod is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PodState {
    running: Option<i32>,
    deleted: bool,
}

/// Follows every matching pod until `stop` turns true, sending lines to `out`. `cursors`
/// holds where earlier runs left instances, by [`Instance::source_id`].
pub async fn follow_pods(
    client: Client,
    options: KubeOptions,
    mut cursors: HashMap<String, Cursor>,
    (out, listed): (mpsc::Sender<Lines>, Arc<AtomicBool>),
    mut stop: watch::Receiver<bool>,
) -> Result<(), KubeError> {
    let config = watcher::Config::default().labels(&options.selector);
    // One watch per namespace (None: one for all), each event tagged with its watch.
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let mut events = futures::stream::select_all(scopes.iter().enumerate().map(|(i, scope)| {
        let api: Api<Pod> = match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        watcher(api, config.clone()).map(move |event| (i, event)).boxed()
    }));
    let mut pods: HashMap<(String, String), watch::Sender<PodState>> = HashMap::new();
    // The pods of each watch's list in progress (a first list, or a re-list after a 410).
    let mut relisted: HashMap<usize, HashSet<(String, String)>> = HashMap::new();
    // The watches whose first list is done; `listed` says when all are.
    let mut first_lists: HashSet<usize> = HashSet::new();
    // Instances with a follower: bounded by the pods that run, as finished ones leave.
    let mut following: HashSet<Instance> = HashSet::new();
    let mut followers: tokio::task::JoinSet<(Instance, Option<Cursor>)> =
        tokio::task::JoinSet::new();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            Some(done) = followers.join_next(), if !followers.is_empty() => {
                if let Ok((instance, cursor)) = done {
                    // Should the instance be followed again, it starts where this one ended.
                    if let Some(cursor) = cursor {
                        cursors.insert(instance.source_id(), cursor);
                    }
                    following.remove(&instance);
                }
                continue;
            }
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some((scope, event)) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(source) => {
                // The watcher re-lists by itself (410 Gone included); errors are transient
                // unless they repeat, so wait a little and go on.
                let error = KubeError::Watch { selector: options.selector.clone(), source };
                warn(&error);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let (pod, deleted) = match event {
            watcher::Event::Apply(pod) => (pod, false),
            watcher::Event::InitApply(pod) => {
                let key = (pod.namespace().unwrap_or_default(), pod.name_any());
                relisted.entry(scope).or_default().insert(key);
                (pod, false)
            }
            watcher::Event::Delete(pod) => (pod, true),
            watcher::Event::Init => {
                relisted.insert(scope, HashSet::new());
                continue;
            }
            watcher::Event::InitDone => {
                first_lists.insert(scope);
                if first_lists.len() == scopes.len() {
                    listed.store(true, Ordering::Relaxed);
                }
                // A pod deleted while the watch was down has no Delete event: it is missing
                // from the new list. Its followers read to the end of what it wrote.
                let listed = relisted.remove(&scope).unwrap_or_default();
                let namespace = scopes[scope].as_deref();
                pods.retain(|key, sender| {
                    let present = namespace.is_some_and(|ns| ns != key.0) || listed.contains(key);
                    if !present {
                        sender.send_replace(PodState { running: None, deleted: true });
                    }
                    present
                });
                continue;
            }
        };
        if let Some(gateway) = &options.gateway
            && !GATEWAY_LABELS.iter().any(|l| pod.labels().get(*l) == Some(gateway))
        {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let running = if deleted { None } else { running_restart(&pod, &options.container) };
        let state = PodState { running, deleted };
        let key = (namespace.clone(), name.clone());
        let sender = pods.entry(key.clone()).or_insert_with(|| watch::channel(state).0);
        sender.send_replace(state);
        if deleted {
            pods.remove(&key);
            continue;
        }
        let Some(restart) = running else { continue };
        let instance =
            Instance { namespace, pod: name, container: options.container.clone(), restart };
        if !following.insert(instance.clone()) {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &instance.namespace);
        let follower = |instance: Instance, previous| Follower {
            api: api.clone(),
            cursor: cursors.get(&instance.source_id()).copied(),
            instance: Arc::new(instance),
            previous,
            state: sender.subscribe(),
            options: options.clone(),
            out: out.clone(),
            stop: stop.clone(),
        };
        // The container restarted while no collector ran: what its previous instance wrote
        // after the stored cursor is still there (the kubelet keeps one previous log).
        let previous = Instance { restart: restart - 1, ..instance.clone() };
        if restart > 0
            && cursors.contains_key(&previous.source_id())
            && following.insert(previous.clone())
        {
            followers.spawn(follower(previous, true).run());
        }
        followers.spawn(follower(instance, false).run());
    }
    while followers.join_next().await.is_some() {}
    Ok(())
}

/// Keeps `workloads` up to date from a watch of every pod in the cluster (sources live in
/// any namespace) until `stop`: each pod's IPs to its workload. Only the IPs, names and UIDs
/// are kept. `listed` is told when the first full list is in.
pub async fn reflect_workloads(
    client: Client,
    workloads: Arc<Workloads>,
    listed: tokio::sync::oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listed = Some(listed);
    let mut events = watcher(Api::<Pod>::all(client), watcher::Config::default()).boxed();
    // A full list is gathered apart and swapped in whole, so lookups never see it half done.
    let mut listing: Option<HashMap<String, Workload>> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.wait_for(|s| *s) => return,
        };
        match event {
            None => return,
            Some(Err(source)) => {
                warn(&KubeError::Watch { selector: "all pods".to_owned(), source });
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some(Ok(watcher::Event::Init)) => listing = Some(HashMap::new()),
            Some(Ok(watcher::Event::InitApply(pod))) => {
                let (ips, workload) = pod_workload(&pod);
                if let Some(listing) = listing.as_mut() {
                    for ip in ips {
                        if listing.len() < crate::workloads::MAX_IPS {
                            listing.insert(ip, workload.clone());
                        }
                    }
                }
            }
            Some(Ok(watcher::Event::InitDone)) => {
                if let Some(listing) = listing.take() {
                    workloads.replace(listing);
                }
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            Some(Ok(watcher::Event::Apply(pod))) => {
                let (ips, workload) = pod_workload(&pod);
                workloads.insert(&ips, &workload);
            }
            Some(Ok(watcher::Event::Delete(pod))) => {
                let (ips, workload) = pod_workload(&pod);
                workloads.remove(&ips, &workload.uid);
            }
        }
    }
}

/// A pod's IPs and workload.
fn pod_workload(pod: &Pod) -> (Vec<String>, Workload) {
    let status = pod.status.as_ref();
    let mut ips: Vec<String> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
        .unwrap_or_default();
    if ips.is_empty() {
        ips.extend(status.and_then(|s| s.pod_ip.clone()));
    }
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.as_str(), o.name.as_str()));
    let hash = pod.labels().get("pod-template-hash").map(String::as_str);
    let name = workload_name(&pod.name_any(), owner, hash);
    let workload = Workload {
        name: name.into(),
        namespace: pod.namespace().unwrap_or_default().into(),
        uid: pod.uid().unwrap_or_default().into(),
    };
    (ips, workload)
}

/// Reports a transient error on stderr, with its causes.
fn warn(error: &KubeError) {
    use std::io::Write;
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    let _ = writeln!(std::io::stderr(), "egresslens: warning: {chain}");
}

/// The restart count of `container` when it is running.
fn running_restart(pod: &Pod, container: &str) -> Option<i32> {
    let status = pod.status.as_ref()?;
    let container = status.container_statuses.as_ref()?.iter().find(|c| c.name == container)?;
    container.state.as_ref()?.running.as_ref()?;
    Some(container.restart_count)
}

/// One instance's log, followed until it ends for good.
struct Follower {
    api: Api<Pod>,
    instance: Arc<Instance>,
    /// An instance that has exited, read once to its end (`previous=true`).
    previous: bool,
    cursor: Option<Cursor>,
    state: watch::Receiver<PodState>,
    options: KubeOptions,
    out: mpsc::Sender<Lines>,
    stop: watch::Receiver<bool>,
}

/// Why a stream stopped being read.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The server closed it.
    Closed,
    /// It ended in the middle of a line (or with an error).
    Cut,
    /// Nothing came for `stall`.
    Stalled,
    /// Stop requested, or nobody takes lines any more.
    Stopped,
}

impl Follower {
    /// Follows until the instance has ended (or a stop); returns the instance and where it
    /// stands.
    async fn run(mut self) -> (Instance, Option<Cursor>) {
        let instance = (*self.instance).clone();
        self.follow().await;
        (instance, self.cursor)
    }

    async fn follow(&mut self) {
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let params = LogParams {
                container: Some(self.instance.container.clone()),
                follow: !self.previous,
                previous: self.previous,
                timestamps: true,
                // Whole seconds, rounded down: kube rounds to the nearest second, which could
                // skip the lines of the cursor's last half second.
                since_time: self.cursor.map(|c| whole_second(c.ts_ns)),
                ..LogParams::default()
            };
            let ended = match self.api.log_stream(&self.instance.pod, &params).await {
                Ok(stream) => {
                    let before = self.cursor;
                    let ended = self.read(stream).await;
                    if self.cursor != before {
                        // It made progress: the next trouble starts the backoff afresh.
                        backoff = Duration::from_millis(100);
                    }
                    ended
                }
                Err(::kube::Error::Api(status)) if status.code == 404 => return,
                Err(_) => Ended::Cut,
            };
            if ended == Ended::Stopped || *self.stop.borrow() {
                return;
            }
            if self.previous && (ended == Ended::Closed || attempts >= PREVIOUS_ATTEMPTS) {
                return;
            }
            // Go on only while this instance runs: a restarted or deleted one has ended, and
            // its stream was read to that end.
            let state = *self.state.borrow();
            let running = state.running == Some(self.instance.restart);
            if !self.previous && (state.deleted || !running) {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    /// Reads one stream, handing over whole lines past the cursor.
    async fn read(&mut self, stream: impl AsyncBufRead) -> Ended {
        let mut stream = std::pin::pin!(stream);
        let mut line = Vec::new();
        let mut batch = Vec::new();
        // Lines at the cursor's timestamp seen on this connection: the first `same` are the
        // overlap with what was taken before.
        let mut seen_same = 0u64;
        let start = self.cursor;
        let mut quiet = Duration::ZERO;
        let ended = loop {
            let wait = if batch.is_empty() {
                self.options.stall.saturating_sub(quiet)
            } else {
                self.options.batch_wait
            };
            let read = tokio::select! {
                read = tokio::time::timeout(wait, stream.read_until(b'\n', &mut line)) => read,
                _ = self.stop.wait_for(|s| *s) => break Ended::Stopped,
            };
            match read {
                Err(_) if batch.is_empty() => break Ended::Stalled,
                Err(_) => {
                    quiet += wait;
                    if !self.flush(&mut batch).await {
                        break Ended::Stopped;
                    }
                    continue;
                }
                Ok(Ok(0)) => break Ended::Closed,
                Ok(Err(_)) => break Ended::Cut,
                Ok(Ok(_)) => {}
            }
            quiet = Duration::ZERO;
            if line.last() != Some(&b'\n') {
                // Cut mid-line: the whole line comes again after the reconnect.
                line.clear();
                break Ended::Cut;
            }
            let ts = line_timestamp(&line);
            if let (Some(ts), Some(start)) = (ts, start)
                && (ts < start.ts_ns || (ts == start.ts_ns && seen_same < start.same))
            {
                seen_same += u64::from(ts == start.ts_ns);
                line.clear();
                continue;
            }
            if let Some(ts) = ts {
                self.cursor = Some(match self.cursor {
                    Some(c) if c.ts_ns == ts => Cursor { ts_ns: ts, same: c.same + 1 },
                    _ => Cursor { ts_ns: ts, same: 1 },
                });
            }
            batch.extend_from_slice(&line);
            line.clear();
            if batch.len() >= self.options.batch_bytes && !self.flush(&mut batch).await {
                break Ended::Stopped;
            }
        };
        if ended != Ended::Stopped || !batch.is_empty() {
            self.flush(&mut batch).await;
        }
        ended
    }

    /// Hands over the batch; false when nobody takes lines any more.
    async fn flush(&mut self, batch: &mut Vec<u8>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let lines = Lines {
            instance: self.instance.clone(),
            bytes: std::mem::take(batch),
            cursor: self.cursor.unwrap_or_default(),
        };
        self.out.send(lines).await.is_ok()
    }
}

/// The timestamp the kubelet put before the line (`2025-08-18T09:36:30.123456789Z `).
fn line_timestamp(line: &[u8]) -> Option<i64> {
    let end = memchr::memchr(b' ', line)?;
    parse_rfc3339_ns(std::str::from_utf8(&line[..end]).ok()?)
}

/// `ts_ns` rounded down to its second.
pub(crate) fn whole_second(ts_ns: i64) -> Timestamp {
    let seconds = ts_ns.div_euclid(1_000_000_000);
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_as_text() {
        let cursor = Cursor { ts_ns: 1_755_509_790_123_456_789, same: 3 };
        assert_eq!(cursor.to_string().parse::<Cursor>(), Ok(cursor));
        assert!("12".parse::<Cursor>().is_err());
    }

    #[test]
    fn cursors_round_down_to_the_second() {
        let ts = parse_rfc3339_ns("2025-08-18T09:36:30.987654321Z").expect("a timestamp");
        assert_eq!(whole_second(ts).to_string(), "2025-08-18T09:36:30Z");
        assert_eq!(line_timestamp(b"2025-08-18T09:36:30.987654321Z {\"a\":1}\n"), Some(ts));
        assert_eq!(line_timestamp(b"no timestamp here\n"), None);
    }
}
