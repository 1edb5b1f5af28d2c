//! Following waypoint pods through the Kubernetes API, against the stand-in API server
//! (`tests/standin`: a real HTTP server on loopback speaking the API's shapes, as no cluster
//! can run here). Every scenario checks that each container instance's lines arrive exactly
//! once and in order: replicas coming and going, restarts, cut and stalled streams, 500s on
//! log requests, `410 Gone` on the watch, and a restart of the follower from its cursors.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

mod standin;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use egresslens::source::kube::{Cursor, KubeOptions, Lines, follow_pods};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use standin::StandIn;
use tokio::sync::{mpsc, watch};

const NS: &str = "istio-egress";

/// Lines received per instance source id, without their timestamp prefix.
type Received = BTreeMap<String, Vec<String>>;

struct Follower {
    rx: mpsc::Receiver<Lines>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    received: Received,
    cursors: HashMap<String, Cursor>,
}

async fn client(standin: &StandIn) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&standin.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn options() -> KubeOptions {
    KubeOptions {
        namespaces: vec![NS.to_owned()],
        stall: Duration::from_millis(800),
        max_backoff: Duration::from_millis(400),
        batch_wait: Duration::from_millis(50),
        ..KubeOptions::default()
    }
}

impl Follower {
    async fn start(standin: &StandIn, cursors: HashMap<String, Cursor>) -> Follower {
        let (tx, rx) = mpsc::channel(64);
        let (stop, stopped) = watch::channel(false);
        let client = client(standin).await;
        let task = tokio::spawn({
            let cursors = cursors.clone();
            async move { follow_pods(client, options(), cursors, tx, stopped).await.unwrap() }
        });
        Follower { rx, stop, task, received: Received::new(), cursors }
    }

    /// Receives until `want` holds (or fails after 20 s).
    async fn until(&mut self, want: &Received) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while &self.received != want {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some(lines)) = tokio::time::timeout(left, self.rx.recv()).await else {
                panic!("received {:#?}\nwant {:#?}", summary(&self.received), summary(want));
            };
            let text = String::from_utf8(lines.bytes).unwrap();
            let id = lines.instance.source_id();
            let got = self.received.entry(id.clone()).or_default();
            got.extend(text.lines().map(|l| l.split_once(' ').unwrap().1.to_owned()));
            self.cursors.insert(id, lines.cursor);
        }
    }

    async fn stop(self) -> HashMap<String, Cursor> {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.task).await.unwrap().unwrap();
        self.cursors
    }
}

fn summary(received: &Received) -> BTreeMap<&String, usize> {
    received.iter().map(|(k, v)| (k, v.len())).collect()
}

/// `n` lines from `start_ns`, several sharing each timestamp (the cursor's hard case), each
/// naming its pod and number.
fn lines(pod: &str, from: usize, n: usize, start_ns: i64) -> Vec<(i64, String)> {
    (from..from + n)
        .map(|i| {
            let ts = start_ns + (i as i64 / 3) * 250_000_000;
            (ts, format!("{{\"pod\":\"{pod}\",\"n\":{i},\"authority\":\"aliyun.com\"}}"))
        })
        .collect()
}

fn texts(lines: &[(i64, String)]) -> Vec<String> {
    lines.iter().map(|(_, l)| l.clone()).collect()
}

const T0: i64 = 1_755_509_790_000_000_000;

fn id(pod: &str, restart: i32) -> String {
    format!("pod:{NS}/{pod}/istio-proxy#{restart}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_restarts_and_deletions_arrive_exactly_once() {
    let standin = StandIn::start().await;
    standin.add_pod(NS, "waypoint-a");
    standin.add_pod(NS, "waypoint-b");
    let (a1, b1) = (lines("a", 0, 30, T0), lines("b", 0, 20, T0));
    standin.log(NS, "waypoint-a", &a1);
    standin.log(NS, "waypoint-b", &b1);
    let mut follower = Follower::start(&standin, HashMap::new()).await;
    let mut want =
        Received::from([(id("waypoint-a", 0), texts(&a1)), (id("waypoint-b", 0), texts(&b1))]);
    follower.until(&want).await;

    // More lines, a new replica, a container restart, a deletion.
    let a2 = lines("a", 30, 15, T0 + 10_000_000_000);
    standin.log(NS, "waypoint-a", &a2);
    want.get_mut(&id("waypoint-a", 0)).unwrap().extend(texts(&a2));
    standin.add_pod(NS, "waypoint-c");
    let c1 = lines("c", 0, 12, T0 + 11_000_000_000);
    standin.log(NS, "waypoint-c", &c1);
    want.insert(id("waypoint-c", 0), texts(&c1));
    follower.until(&want).await;

    let b2 = lines("b", 20, 9, T0 + 12_000_000_000);
    standin.log(NS, "waypoint-b", &b2);
    standin.restart(NS, "waypoint-b");
    let b_next = lines("b-restarted", 0, 7, T0 + 13_000_000_000);
    standin.log(NS, "waypoint-b", &b_next);
    want.get_mut(&id("waypoint-b", 0)).unwrap().extend(texts(&b2));
    want.insert(id("waypoint-b", 1), texts(&b_next));
    let c2 = lines("c", 12, 5, T0 + 14_000_000_000);
    standin.log(NS, "waypoint-c", &c2);
    standin.delete_pod(NS, "waypoint-c");
    want.get_mut(&id("waypoint-c", 0)).unwrap().extend(texts(&c2));
    follower.until(&want).await;
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_stalled_and_failing_streams_resume_from_the_cursor() {
    let standin = StandIn::start().await;
    standin.add_pod(NS, "waypoint-a");
    let a1 = lines("a", 0, 40, T0);
    standin.log(NS, "waypoint-a", &a1);
    // The first stream is cut mid-line, the next two requests fail, the next stream stalls.
    standin.cut_next_log_after(1_000);
    standin.fail_logs_with_500(2);
    standin.stall_next_log();
    let mut follower = Follower::start(&standin, HashMap::new()).await;
    let mut want = Received::from([(id("waypoint-a", 0), texts(&a1))]);
    follower.until(&want).await;
    let a2 = lines("a", 40, 10, T0 + 20_000_000_000);
    standin.log(NS, "waypoint-a", &a2);
    want.get_mut(&id("waypoint-a", 0)).unwrap().extend(texts(&a2));
    follower.until(&want).await;
    assert!(standin.requests("log") >= 5, "{} log requests", standin.requests("log"));
    follower.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_watch_relists_and_a_restarted_follower_resumes_exactly() {
    let standin = StandIn::start().await;
    standin.fail_watches_with_gone(1);
    standin.add_pod(NS, "waypoint-a");
    let a1 = lines("a", 0, 25, T0);
    standin.log(NS, "waypoint-a", &a1);
    let mut follower = Follower::start(&standin, HashMap::new()).await;
    let mut want = Received::from([(id("waypoint-a", 0), texts(&a1))]);
    follower.until(&want).await;
    // Found after the re-list that followed the 410.
    standin.add_pod(NS, "waypoint-b");
    let b1 = lines("b", 0, 5, T0 + 1_000_000_000);
    standin.log(NS, "waypoint-b", &b1);
    want.insert(id("waypoint-b", 0), texts(&b1));
    follower.until(&want).await;
    assert!(standin.requests("list") >= 2, "the 410 made the watcher list again");
    let cursors = follower.stop().await;

    // While no follower runs: more lines in the same second as the last ones taken.
    let a2 = lines("a", 25, 11, T0);
    standin.log(NS, "waypoint-a", &a2);
    let mut follower = Follower::start(&standin, cursors).await;
    let want = Received::from([(id("waypoint-a", 0), texts(&a2))]);
    follower.until(&want).await;
    // Nothing else comes: b's cursor is at its end too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(follower.rx.try_recv().is_err(), "a line came twice");
    follower.stop().await;
}
