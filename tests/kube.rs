//! Following waypoint pods through the Kubernetes API, against the stand-in API server
//! (`tests/standin`: a real HTTP server on loopback speaking the API's shapes, as no cluster
//! can run here). Every scenario checks that each container instance's lines arrive exactly
//! once and in order: replicas coming and going, restarts, cut and stalled streams, 500s on
//! log requests, `410 Gone` on the watch, and a restart of the follower from its cursors.

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

// Its exec parts serve tests/walkthrough.rs.
#[allow(dead_code)]
mod standin;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use egresslens::collect::{CollectConfig, CollectSummary, Control, collect_kube};
use egresslens::rounds::Rounds;
use egresslens::source::kube::{Cursor, KubeOptions, Lines, follow_pods};
use egresslens::store::Store;
use egresslens::traffic::{GenConfig, GenFormat, generate};
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
            let listed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            async move { follow_pods(client, options(), cursors, (tx, listed), stopped).await.unwrap() }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_missed_by_the_watch_is_found_by_the_relist() {
    let standin = StandIn::start().await;
    standin.add_pod(NS, "waypoint-a");
    standin.add_pod(NS, "waypoint-c");
    let (a1, c1) = (lines("a", 0, 10, T0), lines("c", 0, 10, T0));
    standin.log(NS, "waypoint-a", &a1);
    standin.log(NS, "waypoint-c", &c1);
    let mut follower = Follower::start(&standin, HashMap::new()).await;
    let mut want =
        Received::from([(id("waypoint-a", 0), texts(&a1)), (id("waypoint-c", 0), texts(&c1))]);
    follower.until(&want).await;
    // c writes its last lines and is deleted while the watch is down; the watch comes back
    // to a 410 and lists again.
    let c2 = lines("c", 10, 6, T0 + 5_000_000_000);
    standin.log(NS, "waypoint-c", &c2);
    standin.vanish_pod(NS, "waypoint-c");
    standin.fail_watches_with_gone(1);
    let lists = standin.requests("list");
    standin.end_watches();
    want.get_mut(&id("waypoint-c", 0)).unwrap().extend(texts(&c2));
    let a2 = lines("a", 10, 5, T0 + 6_000_000_000);
    standin.log(NS, "waypoint-a", &a2);
    want.get_mut(&id("waypoint-a", 0)).unwrap().extend(texts(&a2));
    follower.until(&want).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while standin.requests("list") == lists && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(standin.requests("list") > lists, "the 410 made the watcher list again");
    // c's follower has ended: no more log requests for it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let logs = standin.log_requests("waypoint-c");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(standin.log_requests("waypoint-c"), logs, "c's follower kept asking for its log");
    assert!(follower.rx.try_recv().is_err(), "a line came twice");
    follower.stop().await;
}

/// Realistic waypoint JSON lines (the generator's), spread over time from `start_ns`, several
/// per timestamp.
fn waypoint_lines(seed: u64, n: u64, start_ns: i64) -> Vec<(i64, String)> {
    let config = GenConfig { lines: n, seed, format: GenFormat::Json, ..GenConfig::default() };
    let mut bytes = Vec::new();
    generate(&config, &mut bytes).unwrap();
    String::from_utf8(bytes)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| (start_ns + (i as i64 / 4) * 100_000_000, l.to_owned()))
        .collect()
}

fn store_count(root: &std::path::Path, sql: &str) -> i64 {
    use arrow_array::cast::AsArray;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let batches = runtime.block_on(async {
        let ctx = egresslens::query::session(root).await.unwrap();
        egresslens::query::run(&ctx, sql).await.unwrap()
    });
    batches[0].column(0).as_primitive::<arrow_array::types::Int64Type>().value(0)
}

/// The stand-in API server on a runtime of its own (kept alive by the caller), and a
/// temporary directory.
fn stand_in() -> (tokio::runtime::Runtime, StandIn, tempfile::TempDir) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let standin = runtime.block_on(StandIn::start());
    (runtime, standin, tempfile::tempdir().unwrap())
}

fn sigterm(child: &std::process::Child) {
    let mut term = std::process::Command::new("kill");
    term.args(["-TERM", &child.id().to_string()]);
    assert!(term.status().unwrap().success());
}

fn no_duplicates(root: &std::path::Path) {
    let dups = "SELECT count(*) - count(DISTINCT request_id) FROM access_log \
                WHERE request_id IS NOT NULL";
    assert_eq!(store_count(root, dups), 0, "a request was stored twice");
}

/// Runs `collect_kube` on its own thread (it makes its own runtime) until the store holds
/// `rows` records, then stops it.
fn collect_until(standin: &StandIn, root: &std::path::Path, rows: i64) -> CollectSummary {
    collect_until_with(standin, root, ("SELECT count(*) FROM access_log", rows), vec![options()])
}

/// Runs `collect_kube` over `pods` until `sql` counts `rows`, then stops it.
fn collect_until_with(
    standin: &StandIn,
    root: &std::path::Path,
    (sql, rows): (&str, i64),
    pods: Vec<KubeOptions>,
) -> CollectSummary {
    let kubeconfig = Kubeconfig::from_yaml(&standin.kubeconfig()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let kube_config = runtime
        .block_on(kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()))
        .unwrap();
    let control = std::sync::Arc::new(Control::default());
    let config = CollectConfig {
        once: false,
        commit_every: Duration::from_millis(200),
        poll: Duration::from_millis(50),
        ..CollectConfig::default()
    };
    let (root_owned, control_thread) = (root.to_path_buf(), control.clone());
    let run = std::thread::spawn(move || {
        let (mut store, _) = Store::open(&root_owned).unwrap();
        let cluster = Some("test-cluster".to_owned());
        collect_kube(
            kube_config,
            (pods, Rounds::default()),
            cluster,
            &mut store,
            &config,
            &control_thread,
        )
        .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = store_count(root, sql);
        if got == rows {
            break;
        }
        assert!(Instant::now() < deadline, "store has {got} records, want {rows}");
        std::thread::sleep(Duration::from_millis(100));
    }
    control.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    run.join().unwrap()
}

#[test]
fn collect_kube_stores_every_line_once_across_a_collector_restart() {
    let (_runtime, standin, dir) = stand_in();
    let root = dir.path().join("store");
    standin.add_pod(NS, "waypoint-a");
    standin.add_pod(NS, "waypoint-b");
    let (a1, b1) = (waypoint_lines(1, 400, T0), waypoint_lines(2, 300, T0));
    standin.log(NS, "waypoint-a", &a1);
    standin.log(NS, "waypoint-b", &b1);
    let first = collect_until(&standin, &root, 700);
    assert_eq!((first.records, first.rejects), (700, 0), "{first:?}");

    // While the collector is down: more lines, some in the second it stopped in.
    let last_a = a1.last().unwrap().0;
    standin.log(NS, "waypoint-a", &waypoint_lines(3, 150, last_a));
    standin.log(NS, "waypoint-b", &waypoint_lines(4, 50, T0 + 60_000_000_000));
    let second = collect_until(&standin, &root, 900);
    assert_eq!(second.records, 200, "{second:?}");
    let per_pod = "SELECT count(*) FROM access_log \
                   WHERE namespace = 'istio-egress' AND pod = 'waypoint-a' AND cluster = 'test-cluster'";
    assert_eq!(store_count(&root, per_pod), 550);
    no_duplicates(&root);
}

/// `egresslens collect --kube` as a user runs it: a kubeconfig file, a namespace, one
/// waypoint of two; SIGTERM ends it with everything committed.
#[test]
fn the_cli_follows_one_waypoint_and_stops_cleanly_on_sigterm() {
    let (_runtime, standin, dir) = stand_in();
    let (root, kubeconfig) = (dir.path().join("store"), dir.path().join("kubeconfig"));
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();
    standin.add_pod_of(NS, "egress-a", "egress");
    standin.add_pod_of(NS, "other-a", "other");
    standin.log(NS, "egress-a", &waypoint_lines(5, 120, T0));
    standin.log(NS, "other-a", &waypoint_lines(6, 80, T0));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["collect", "--kube", "--namespace", NS, "--waypoint", "egress", "--cluster", "c1"])
        .args(["--commit-every", "200ms", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--store")
        .arg(&root)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store_count(&root, "SELECT count(*) FROM access_log") < 120 {
        assert!(Instant::now() < deadline, "the collector stored too little");
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("120 records"), "{stderr}");
    assert_eq!(store_count(&root, "SELECT count(*) FROM access_log WHERE pod = 'egress-a'"), 120);
}

/// `top --kube` without a terminal follows the pods until their logs went quiet and prints
/// one table: `stats`'s of the same lines.
#[test]
fn top_kube_without_a_terminal_shows_the_pods_egress() {
    let (_runtime, standin, dir) = stand_in();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();
    standin.add_pod(NS, "waypoint-a");
    standin.add_pod(NS, "waypoint-b");
    let (a, b) = (waypoint_lines(7, 500, T0), waypoint_lines(8, 250, T0));
    standin.log(NS, "waypoint-a", &a);
    standin.log(NS, "waypoint-b", &b);
    let lines = dir.path().join("lines.log");
    std::fs::write(&lines, [texts(&a), texts(&b)].concat().join("\n") + "\n").unwrap();
    let top = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["top", "--kube", "--namespace", NS, "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&top.stdout);
    assert!(top.status.success(), "{}", String::from_utf8_lossy(&top.stderr));
    assert!(shown.starts_with("750 lines: 750 records"), "{shown}");
    let stats = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .arg("stats")
        .arg(&lines)
        .output()
        .unwrap();
    assert_eq!(shown, String::from_utf8_lossy(&stats.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_no_follower_ran_is_read_from_the_previous_instance() {
    let standin = StandIn::start().await;
    standin.add_pod(NS, "waypoint-a");
    let a1 = lines("a", 0, 20, T0);
    standin.log(NS, "waypoint-a", &a1);
    let mut follower = Follower::start(&standin, HashMap::new()).await;
    follower.until(&Received::from([(id("waypoint-a", 0), texts(&a1))])).await;
    let cursors = follower.stop().await;

    // While it is down: the old instance writes more, exits, and a new one starts.
    let a2 = lines("a", 20, 8, T0);
    standin.log(NS, "waypoint-a", &a2);
    standin.restart(NS, "waypoint-a");
    let fresh = lines("a-restarted", 0, 6, T0 + 30_000_000_000);
    standin.log(NS, "waypoint-a", &fresh);
    let mut follower = Follower::start(&standin, cursors).await;
    let want =
        Received::from([(id("waypoint-a", 0), texts(&a2)), (id("waypoint-a", 1), texts(&fresh))]);
    follower.until(&want).await;
    follower.stop().await;
}

/// `collect --kube` killed with SIGKILL five times while two replicas keep logging, and the
/// API server failing under each run in another way (log streams cut mid-line, log requests
/// answered 500, a watch answered 410 Gone, a stalled stream): after a last run catches up,
/// the store holds every served line once.
#[test]
fn sigkill_and_api_faults_while_following_pods_lose_and_duplicate_nothing() {
    let (_runtime, standin, dir) = stand_in();
    let (root, kubeconfig) = (dir.path().join("store"), dir.path().join("kubeconfig"));
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();
    standin.add_pod(NS, "waypoint-a");
    standin.add_pod(NS, "waypoint-b");
    // The replicas log 20 parts of 40 lines each, 4 lines per 100 ms of log time.
    let writer = std::thread::spawn({
        let standin = standin.clone();
        move || {
            for part in 0..20u64 {
                let start = T0 + part as i64 * 1_000_000_000;
                standin.log(NS, "waypoint-a", &waypoint_lines(100 + part, 40, start));
                standin.log(NS, "waypoint-b", &waypoint_lines(200 + part, 40, start));
                std::thread::sleep(Duration::from_millis(80));
            }
        }
    });
    let collector = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
            .args(["collect", "--kube", "--namespace", NS, "--commit-every", "100ms"])
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--store")
            .arg(&root)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let faults: [&dyn Fn(); 5] = [
        &|| standin.cut_next_log_after(700),
        &|| standin.fail_logs_with_500(2),
        &|| standin.fail_watches_with_gone(1),
        &|| standin.stall_next_log(),
        &|| {
            standin.cut_next_log_after(1_500);
            standin.fail_watches_with_gone(1);
        },
    ];
    for (pause, fault) in [150, 400, 250, 600, 300].into_iter().zip(faults) {
        fault();
        let mut child = collector();
        std::thread::sleep(Duration::from_millis(pause));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.join().unwrap();
    let child = collector();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store_count(&root, "SELECT count(*) FROM access_log") < 1_600 {
        assert!(Instant::now() < deadline, "the collector stored too little");
        std::thread::sleep(Duration::from_millis(100));
    }
    sigterm(&child);
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(store_count(&root, "SELECT count(*) FROM access_log"), 1_600);
    no_duplicates(&root);
}

#[test]
fn sources_resolve_to_workloads_from_pod_ips() {
    let (_runtime, standin, dir) = stand_in();
    let root = dir.path().join("store");
    standin.add_pod(NS, "waypoint-a");
    let served = waypoint_lines(9, 300, T0);
    // The busiest source IP belongs to a `sleep` pod in `apps`; the others to nobody known.
    let mut by_ip: BTreeMap<String, i64> = BTreeMap::new();
    for (_, line) in &served {
        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
        let address = entry["downstream_remote_address"].as_str().unwrap();
        *by_ip.entry(address.rsplit_once(':').unwrap().0.to_owned()).or_default() += 1;
    }
    let (ip, n) = by_ip.iter().max_by_key(|(_, n)| **n).unwrap();
    standin.add_app_pod("apps", "sleep", ip);
    standin.log(NS, "waypoint-a", &served);
    let options = KubeOptions { resolve_sources: true, ..options() };
    collect_until_with(&standin, &root, ("SELECT count(*) FROM access_log", 300), vec![options]);
    let sql = format!(
        "SELECT count(*) FROM access_log WHERE source_ip = '{ip}' \
         AND source_workload = 'sleep' AND source_namespace = 'apps'"
    );
    assert_eq!(store_count(&root, &sql), *n);
    let unknown = "SELECT count(*) FROM access_log WHERE source_workload IS NULL";
    assert_eq!(store_count(&root, unknown), 300 - n);
}

#[test]
fn ztunnel_pods_are_followed_into_their_table() {
    let (_runtime, standin, dir) = stand_in();
    let root = dir.path().join("store");
    standin.add_pod(NS, "waypoint-a");
    standin.log(NS, "waypoint-a", &waypoint_lines(21, 10, T0));
    standin.add_app_pod("istio-system", "ztunnel", "10.0.0.5");
    let fixture = include_str!("fixtures/real/ztunnel.log");
    let ztunnel: Vec<(i64, String)> = fixture
        .lines()
        .enumerate()
        .map(|(i, l)| (T0 + i as i64 * 1_000_000, l.to_owned()))
        .collect();
    standin.log("istio-system", "ztunnel-7b9f8d6c5-x2x7k", &ztunnel);
    let ztunnel_pods = KubeOptions {
        namespaces: vec!["istio-system".to_owned()],
        selector: "app=ztunnel".to_owned(),
        ..options()
    };
    let both = "SELECT (SELECT count(*) FROM access_log) + (SELECT count(*) FROM ztunnel_conn)";
    let summary = collect_until_with(&standin, &root, (both, 18), vec![options(), ztunnel_pods]);
    assert_eq!((summary.records, summary.ztunnel, summary.rejects), (10, 8, 0), "{summary:?}");
    let from_ztunnel = "SELECT count(*) FROM ztunnel_conn \
                        WHERE namespace = 'istio-system' AND pod = 'ztunnel-7b9f8d6c5-x2x7k'";
    assert_eq!(store_count(&root, from_ztunnel), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_replacing_both_replicas_loses_nothing() {
    let standin = StandIn::start().await;
    standin.add_pod(NS, "waypoint-old-a");
    standin.add_pod(NS, "waypoint-old-b");
    let (a, b) = (lines("old-a", 0, 15, T0), lines("old-b", 0, 15, T0));
    standin.log(NS, "waypoint-old-a", &a);
    standin.log(NS, "waypoint-old-b", &b);
    let mut follower = Follower::start(&standin, HashMap::new()).await;
    let mut want = Received::from([
        (id("waypoint-old-a", 0), texts(&a)),
        (id("waypoint-old-b", 0), texts(&b)),
    ]);
    follower.until(&want).await;
    // The new replicas come up, the old ones write their last lines and go.
    standin.add_pod(NS, "waypoint-new-a");
    standin.add_pod(NS, "waypoint-new-b");
    for old in ["waypoint-old-a", "waypoint-old-b"] {
        let last = lines(old, 15, 5, T0 + 5_000_000_000);
        standin.log(NS, old, &last);
        standin.delete_pod(NS, old);
        want.get_mut(&id(old, 0)).unwrap().extend(texts(&last));
    }
    for new in ["waypoint-new-a", "waypoint-new-b"] {
        let first = lines(new, 0, 10, T0 + 6_000_000_000);
        standin.log(NS, new, &first);
        want.insert(id(new, 0), texts(&first));
    }
    follower.until(&want).await;
    follower.stop().await;
}

/// The walkthrough's ServiceEntry, DestinationRule and waypoint Gateway, recorded-shape.
fn walkthrough_objects(version: &str) -> [(&'static str, serde_json::Value); 3] {
    let load = |text: &str| {
        let mut object: serde_json::Value = serde_json::from_str(text).unwrap();
        let api_version = object["apiVersion"].as_str().unwrap().to_owned();
        if api_version.starts_with("networking.istio.io/") {
            object["apiVersion"] = serde_json::json!(format!("networking.istio.io/{version}"));
        }
        object
    };
    [
        ("serviceentries", load(include_str!("fixtures/kube/serviceentry-aliyun.json"))),
        ("destinationrules", load(include_str!("fixtures/kube/destinationrule-aliyun.json"))),
        ("gateways", load(include_str!("fixtures/kube/gateway-waypoint.json"))),
    ]
}

/// The object in `tests/fixtures/kube/<file>`, as `<namespace>/<name>`.
fn like_fixture(file: &str, namespace: &str, name: &str) -> serde_json::Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kube").join(file);
    let mut object: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    object["metadata"]["namespace"] = namespace.into();
    object["metadata"]["name"] = name.into();
    object
}

fn mesh_json(standin: &StandIn, dir: &std::path::Path) -> serde_json::Value {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["mesh", "-o", "json", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn problems(host: &serde_json::Value) -> Vec<&str> {
    host["problems"].as_array().unwrap().iter().map(|p| p["kind"].as_str().unwrap()).collect()
}

#[test]
fn mesh_shows_each_hosts_posture_and_its_problems() {
    let (_runtime, standin, dir) = stand_in();
    for (plural, object) in walkthrough_objects("v1") {
        standin.add_object(plural, object);
    }
    standin.add_namespace(NS, serde_json::json!({"istio.io/use-waypoint": "waypoint"}));
    standin.add_pod_of(NS, "waypoint-5c9d7f6b8d-h7k2x", "waypoint");
    // A host registered where no waypoint is asked for.
    standin.add_namespace("payments", serde_json::json!({}));
    let mut github = like_fixture("serviceentry-aliyun.json", "payments", "github");
    github["spec"]["hosts"] = serde_json::json!(["api.github.com"]);
    github["spec"]["ports"] =
        serde_json::json!([{"number": 443, "name": "https", "protocol": "HTTPS"}]);
    standin.add_object("serviceentries", github);
    // A waypoint whose only pod is not ready, serving a host mapped to 443 without TLS.
    standin.add_namespace("ai", serde_json::json!({"istio.io/use-waypoint": "ai-waypoint"}));
    standin.add_object("gateways", like_fixture("gateway-waypoint.json", "ai", "ai-waypoint"));
    standin.add_pod_of("ai", "ai-waypoint-6d8f9c7b5-p4q8r", "ai-waypoint");
    standin.set_ready("ai", "ai-waypoint-6d8f9c7b5-p4q8r", false);
    let mut dashscope = like_fixture("serviceentry-aliyun.json", "ai", "dashscope");
    dashscope["spec"]["hosts"] = serde_json::json!(["dashscope.aliyuncs.com"]);
    standin.add_object("serviceentries", dashscope);

    let mesh = mesh_json(&standin, dir.path());
    let hosts = mesh["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["aliyun.com", "api.github.com", "dashscope.aliyuncs.com"]);
    let aliyun = &hosts[0];
    assert_eq!(problems(aliyun), Vec::<&str>::new());
    assert_eq!(aliyun["waypoint"], "istio-egress/waypoint");
    assert_eq!(
        (aliyun["waypoint_ready_pods"].as_u64(), aliyun["waypoint_pods"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(aliyun["ports"][0]["target_port"], 443);
    assert_eq!(aliyun["ports"][0]["tls_mode"], "SIMPLE");
    assert_eq!(aliyun["ports"][0]["tls_origination"], true);
    assert_eq!(aliyun["addresses"][0], "240.240.0.3");
    assert_eq!(problems(&hosts[1]), ["no_waypoint"]);
    assert_eq!(problems(&hosts[2]), ["waypoint_not_ready", "tls_half_configured"]);
    assert_eq!(hosts[2]["waypoint_pods"], 1);

    let table = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["mesh", "--kubeconfig"])
        .arg(dir.path().join("kubeconfig"))
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    let aliyun_row = table.lines().find(|l| l.starts_with("aliyun.com")).unwrap();
    assert!(aliyun_row.contains("80→443/HTTP tls:SIMPLE, 443/HTTPS"), "{table}");
    assert!(aliyun_row.ends_with("istio-egress/waypoint (1/1 ready)  ok"), "{table}");
    assert!(table.contains("- [no_waypoint] api.github.com is registered in namespace payments"));
}

#[test]
fn mesh_falls_back_to_v1beta1_and_says_when_istio_is_missing() {
    let (_runtime, standin, dir) = stand_in();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
        .args(["mesh", "--kubeconfig"])
        .arg({
            let path = dir.path().join("kubeconfig");
            std::fs::write(&path, standin.kubeconfig()).unwrap();
            path
        })
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no networking.istio.io v1 or v1beta1: is Istio installed?"),
        "{stderr}"
    );

    for (plural, object) in walkthrough_objects("v1beta1") {
        standin.add_object(plural, object);
    }
    standin.add_namespace(NS, serde_json::json!({"istio.io/use-waypoint": "waypoint"}));
    standin.add_pod_of(NS, "waypoint-5c9d7f6b8d-h7k2x", "waypoint");
    let mesh = mesh_json(&standin, dir.path());
    let aliyun = &mesh["hosts"][0];
    assert_eq!(aliyun["host"], "aliyun.com");
    assert_eq!(aliyun["ports"][0]["tls_origination"], true);
    assert_eq!(problems(aliyun), Vec::<&str>::new());
}

/// `mesh --watch -o json`'s snapshots, one per line, read on a thread of their own.
struct MeshWatch {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl MeshWatch {
    fn start(kubeconfig: &std::path::Path) -> MeshWatch {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_egresslens"))
            .args(["mesh", "--watch", "-o", "json", "--kubeconfig"])
            .arg(kubeconfig)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    return;
                }
            }
        });
        MeshWatch { child, lines }
    }

    /// Reads snapshots until one satisfies `want` (or fails after 20 s).
    fn until(&self, what: &str, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) else { continue };
            last = serde_json::from_str(&line).unwrap();
            if want(&last) {
                return last;
            }
        }
        panic!("no snapshot where {what}; the last one: {last:#}");
    }
}

impl Drop for MeshWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_problems<'a>(mesh: &'a serde_json::Value, host: &str) -> Option<Vec<&'a str>> {
    let hosts = mesh["hosts"].as_array()?;
    hosts.iter().find(|h| h["host"] == host).map(problems)
}

#[test]
fn mesh_watch_follows_changes_and_relists_after_gone() {
    let (_runtime, standin, dir) = stand_in();
    for (plural, object) in walkthrough_objects("v1") {
        standin.add_object(plural, object);
    }
    standin.add_namespace(NS, serde_json::json!({"istio.io/use-waypoint": "waypoint"}));
    standin.add_pod_of(NS, "waypoint-5c9d7f6b8d-h7k2x", "waypoint");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();
    let mut watch = MeshWatch::start(&kubeconfig);
    watch.until("aliyun.com is clean", |m| host_problems(m, "aliyun.com") == Some(vec![]));

    standin.delete_object("destinationrules", "networking.istio.io/v1", NS, "aliyun-com");
    watch.until("the DestinationRule is gone", |m| {
        host_problems(m, "aliyun.com") == Some(vec!["tls_half_configured"])
    });
    standin.set_ready(NS, "waypoint-5c9d7f6b8d-h7k2x", false);
    watch.until("the waypoint is not ready", |m| {
        host_problems(m, "aliyun.com") == Some(vec!["waypoint_not_ready", "tls_half_configured"])
    });

    // Every watch ends and comes back to a 410: what changed meanwhile is found by the lists.
    standin.fail_watches_with_gone(8);
    standin.end_watches();
    let mut github = like_fixture("serviceentry-aliyun.json", NS, "github");
    github["spec"]["hosts"] = serde_json::json!(["api.github.com"]);
    standin.add_object("serviceentries", github);
    standin.add_namespace(NS, serde_json::json!({}));
    let mesh = watch.until("the new host and the unlabelled namespace show", |m| {
        host_problems(m, "api.github.com") == Some(vec!["no_waypoint", "tls_half_configured"])
    });
    assert_eq!(
        host_problems(&mesh, "aliyun.com"),
        Some(vec!["no_waypoint", "tls_half_configured"])
    );
    // Each of the 5 watches lists once at the start and once after its 410 (the snapshot
    // above can come before the slowest one is back).
    let deadline = Instant::now() + Duration::from_secs(20);
    while standin.requests("list") < 10 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(standin.requests("list") >= 10, "{} lists", standin.requests("list"));

    sigterm(&watch.child);
    assert!(watch.child.wait().unwrap().success());
}
