//! Where `top`'s data comes from:
//!
//! - [`Feed::Attach`]: a running collector's status API (`/api/v1/snapshot` every second, in
//!   the window the view asks for; `/api/v1/tail` as a stream), over plain HTTP (the API
//!   listens on loopback; reach a pod's through `kubectl port-forward`);
//! - [`Feed::Pipeline`]: the collector's own pipeline run here, over files followed like
//!   `tail -F` or over the waypoint pods through the Kubernetes API, into a store kept while
//!   `top` runs (so SQL has something to query);
//! - [`Feed::Store`]: a store's history, replayed ([`super::history`]).
//!
//! Snapshots go out on a `watch` channel (the newest wins), tail records on a bounded channel
//! (a full one drops them, counted).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use tokio::sync::watch;

use super::history::History;
use crate::collect::{
    CollectConfig, CollectError, CollectSummary, Control, collect, collect_files, collect_kube,
};
use crate::filter::Filter;
use crate::live::{Listing, Live, SelfCounts, Snapshot, TailRecord};
use crate::query::StoreAt;
use crate::redact::Redaction;
use crate::report::SortKey;
use crate::rounds::Rounds;
use crate::source::Input;
use crate::source::kube::KubeOptions;
use crate::stats::{StatsConfig, Window};
use crate::store::Store;

/// What the screen asks the feed for: a window, a host to look at closer, and which hosts to
/// list (the first [`HOSTS_LISTED`] the filter takes, in the screen's order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct View {
    window: Window,
    host: Option<String>,
    filter: String,
    sort: SortKey,
    reverse: bool,
}

/// Hosts a snapshot lists at most: a screen shows a few dozen, and at 10 000 hosts the whole
/// list would be most of `top`'s memory (the filter and the sort choose which).
pub const HOSTS_LISTED: usize = 1_000;

impl View {
    fn listing(&self) -> Listing {
        Listing {
            filter: Filter::parse(&self.filter).unwrap_or_default(),
            sort: self.sort,
            reverse: self.reverse,
            limit: Some(HOSTS_LISTED),
        }
    }
}

/// Tail records waiting for the screen.
const TAIL_CHANNEL: usize = 4_096;

/// How often a snapshot is taken (or fetched).
const SNAPSHOT_EVERY: Duration = Duration::from_millis(1_000);

/// A network read that takes longer is a dead connection.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("--attach {0}: say http://HOST:PORT (the status API speaks plain HTTP)")]
    Url(String),
    #[error("cannot open the store {path}")]
    Store {
        path: String,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("replaying the store: {0}")]
    History(String),
    #[error("collecting {path}")]
    Collect {
        path: String,
        #[source]
        source: crate::collect::CollectError,
    },
    #[error("{0}")]
    NoSnapshot(String),
}

/// Where snapshots come from.
#[derive(Debug, Clone)]
pub enum Feed {
    /// A collector's status API at `addr` (`url` as given), with its bearer token.
    Attach { url: String, addr: SocketAddr, token: Option<String> },
    /// The collector's pipeline over `source`, into the store at `store`, redacting what
    /// `redact` names.
    Pipeline { source: Pipeline, store: PathBuf, redact: Redaction },
    /// A store's history, replayed.
    Store(History),
}

/// What `top` runs the pipeline over.
#[derive(Debug, Clone)]
pub enum Pipeline {
    /// Files, followed like `tail -F`.
    Files(Vec<PathBuf>),
    /// The pods `pods` selects, through the Kubernetes API of `config`.
    Kube { config: Box<kube::Config>, pods: Vec<KubeOptions>, cluster: Option<String> },
}

impl Pipeline {
    fn name(&self) -> String {
        match self {
            Pipeline::Files(paths) => {
                paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ")
            }
            Pipeline::Kube { cluster, .. } => match cluster {
                Some(cluster) => format!("kube {cluster}"),
                None => "kube".to_owned(),
            },
        }
    }

    /// Reads into `store` until `control.stop` (or, for files with `once`, their ends).
    fn collect(
        &self,
        store: &mut Store,
        config: &CollectConfig,
        control: &Control,
    ) -> Result<CollectSummary, CollectError> {
        match self {
            Pipeline::Files(paths) => match paths.as_slice() {
                [path] => collect(&Input::Path(path.clone()), store, config, control),
                _ => collect_files(paths, store, config, control),
            },
            Pipeline::Kube { config: kube, pods, cluster } => {
                let sources = (pods.clone(), Rounds::default());
                collect_kube((**kube).clone(), sources, cluster.clone(), store, config, control)
            }
        }
    }
}

impl Feed {
    /// An attached feed from `url` (`http://host:port`).
    pub fn attach(url: &str, token: Option<String>) -> Result<Feed, FeedError> {
        let bad = || FeedError::Url(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let host = rest.trim_end_matches('/');
        let addr = host.to_socket_addrs().map_err(|_| bad())?.next().ok_or_else(bad)?;
        Ok(Feed::Attach { url: url.trim_end_matches('/').to_owned(), addr, token })
    }

    /// What the title calls it.
    pub fn name(&self) -> String {
        match self {
            Feed::Attach { url, .. } => url.clone(),
            Feed::Pipeline { source, .. } => source.name(),
            Feed::Store(history) => format!("store {}", history.store),
        }
    }

    /// The store SQL can run on, when the feed keeps one.
    pub fn store(&self) -> Option<StoreAt> {
        match self {
            Feed::Attach { .. } => None,
            Feed::Pipeline { store, .. } => Some(StoreAt::Dir(store.clone())),
            Feed::Store(history) => Some(history.store.clone()),
        }
    }

    /// Starts feeding; `once` is for one snapshot: files are read to their ends first, pods'
    /// logs until every watch has listed its pods and the logs went quiet.
    pub fn start(self, once: bool) -> Result<Running, FeedError> {
        let (snapshot_tx, snapshots) = watch::channel(None);
        let (window, window_rx) = watch::channel(View::default());
        let (tail_tx, tail) = bounded(TAIL_CHANNEL);
        let shared = Arc::new(Shared::default());
        let mut running = Running {
            snapshots,
            window,
            tail,
            shared: shared.clone(),
            pipeline: None,
            control: None,
        };
        match self {
            Feed::Attach { addr, token, .. } => {
                let (token2, shared2) = (token.clone(), shared.clone());
                std::thread::spawn(move || {
                    poll_snapshots(addr, token2.as_deref(), (&snapshot_tx, window_rx), &shared2);
                });
                if !once {
                    std::thread::spawn(move || {
                        follow_tail(addr, token.as_deref(), &tail_tx, &shared);
                    });
                }
            }
            Feed::Store(history) => {
                let live = Arc::new(Live::new(StatsConfig::default()));
                live.readiness.store.store(true, Ordering::Relaxed);
                live.readiness.sources.store(true, Ordering::Relaxed);
                let findings = history.findings().unwrap_or_else(|e| {
                    shared.problem(format!("findings: {e}"));
                    Vec::new()
                });
                let with_findings = move |mut snapshot: Snapshot| {
                    snapshot.stats.findings.clone_from(&findings);
                    snapshot
                };
                if once {
                    history.replay(&live, &shared.stop).map_err(FeedError::History)?;
                    let snapshot = live.snapshot(Window::All, SelfCounts::default());
                    snapshot_tx.send_replace(Some(with_findings(snapshot)));
                    return Ok(running);
                }
                let (replaying, replay_shared) = (live.clone(), shared.clone());
                std::thread::spawn(move || {
                    if let Err(e) = history.replay(&replaying, &replay_shared.stop) {
                        replay_shared.problem(format!("replay: {e}"));
                    }
                });
                let (snapshot_live, stop) = (live.clone(), shared.clone());
                std::thread::spawn(move || {
                    while !stop.stop.load(Ordering::Relaxed) {
                        let view = window_rx.borrow().clone();
                        let counts = SelfCounts::default();
                        let snapshot = snapshot_live.snapshot_with(
                            view.window,
                            counts,
                            view.host.as_deref(),
                            &view.listing(),
                        );
                        snapshot_tx.send_replace(Some(with_findings(snapshot)));
                        sleep_unless(&stop.stop, SNAPSHOT_EVERY);
                    }
                });
                forward_tail(&live, tail_tx, shared);
            }
            Feed::Pipeline { source, store, redact } => {
                let name = source.name();
                let (mut opened, _) = Store::open(&store).map_err(|source| FeedError::Store {
                    path: store.display().to_string(),
                    source,
                })?;
                let live = Arc::new(Live::new(StatsConfig::default()));
                live.readiness.store.store(true, Ordering::Relaxed);
                let control = Arc::new(Control::default());
                let _ = control.live.set(live.clone());
                let files = matches!(source, Pipeline::Files(_));
                // Commits every second, so SQL soon sees what the screen shows.
                let config = CollectConfig {
                    once: once && files,
                    commit_every: Duration::from_secs(1),
                    redact,
                    ..CollectConfig::default()
                };
                if once && files {
                    source
                        .collect(&mut opened, &config, &control)
                        .map_err(|source| FeedError::Collect { path: name, source })?;
                    snapshot_tx
                        .send_replace(Some(live.snapshot(Window::All, SelfCounts::of(&control))));
                    return Ok(running);
                }
                let collecting = control.clone();
                running.pipeline = Some(std::thread::spawn({
                    let shared = shared.clone();
                    move || {
                        if let Err(e) = source.collect(&mut opened, &config, &collecting) {
                            shared.problem(format!(
                                "collecting {name}: {}",
                                crate::rounds::chain(&e)
                            ));
                        }
                    }
                }));
                running.control = Some(control.clone());
                if once {
                    settle(&live, &control, &shared).map_err(FeedError::NoSnapshot)?;
                    snapshot_tx
                        .send_replace(Some(live.snapshot(Window::All, SelfCounts::of(&control))));
                    return Ok(running);
                }
                let (snapshot_live, snapshot_control, stop) =
                    (live.clone(), control.clone(), shared.clone());
                std::thread::spawn(move || {
                    while !stop.stop.load(Ordering::Relaxed) {
                        let view = window_rx.borrow().clone();
                        let counts = SelfCounts::of(&snapshot_control);
                        let snapshot = snapshot_live.snapshot_with(
                            view.window,
                            counts,
                            view.host.as_deref(),
                            &view.listing(),
                        );
                        snapshot_tx.send_replace(Some(snapshot));
                        sleep_unless(&stop.stop, SNAPSHOT_EVERY);
                    }
                });
                forward_tail(&live, tail_tx, shared);
            }
        }
        Ok(running)
    }
}

/// How long logs must stay quiet before a one-snapshot `top --kube` takes its snapshot.
const QUIET: Duration = Duration::from_secs(1);

/// The longest a one-snapshot `top --kube` follows the pods.
const SETTLE_WAIT: Duration = Duration::from_secs(30);

/// Waits until the sources are connected and no line came for [`QUIET`]: what the pods have
/// logged so far is in the live view. Else why not (the pipeline failed, or it took too long).
fn settle(live: &Live, control: &Control, shared: &Shared) -> Result<(), String> {
    let until = Instant::now() + SETTLE_WAIT;
    let mut seen = (u64::MAX, Instant::now());
    while Instant::now() < until {
        if let Some(problem) = shared.current_problem() {
            return Err(problem);
        }
        let lines = control.lines.load(Ordering::Relaxed);
        if lines != seen.0 {
            seen = (lines, Instant::now());
        } else if live.readiness.sources.load(Ordering::Relaxed) && seen.1.elapsed() >= QUIET {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("the pods' logs did not settle within {SETTLE_WAIT:?}"))
}

/// The live view's tail records to the screen's channel, on a thread of their own.
fn forward_tail(live: &Live, tail: Sender<TailRecord>, shared: Arc<Shared>) {
    let mut records = live.subscribe();
    std::thread::spawn(move || {
        while !shared.stop.load(Ordering::Relaxed) {
            match records.blocking_recv() {
                Ok(record) => shared.offer(&tail, (*record).clone()),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    shared.tail_dropped.fetch_add(n, Ordering::Relaxed);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// What the feed's threads share with the screen.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    /// The last thing that went wrong (a collector unreachable, a refused token), for the title.
    problem: Mutex<Option<String>>,
    tail_dropped: AtomicU64,
}

impl Shared {
    fn problem(&self, text: String) {
        if let Ok(mut problem) = self.problem.lock() {
            *problem = Some(text);
        }
    }

    fn current_problem(&self) -> Option<String> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    fn clear_problem(&self) {
        if let Ok(mut problem) = self.problem.lock() {
            *problem = None;
        }
    }

    fn offer(&self, tail: &Sender<TailRecord>, record: TailRecord) {
        if let Err(TrySendError::Full(_)) = tail.try_send(record) {
            self.tail_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A started feed.
#[derive(Debug)]
pub struct Running {
    snapshots: watch::Receiver<Option<Snapshot>>,
    window: watch::Sender<View>,
    tail: Receiver<TailRecord>,
    shared: Arc<Shared>,
    /// The pipeline's thread and control, when it runs here. The other threads (network
    /// reads, the tail) end with the process.
    pipeline: Option<JoinHandle<()>>,
    control: Option<Arc<Control>>,
}

impl Running {
    pub fn snapshots(&self) -> watch::Receiver<Option<Snapshot>> {
        self.snapshots.clone()
    }

    pub fn tail(&self) -> &Receiver<TailRecord> {
        &self.tail
    }

    /// Snapshots from now on cover `window`.
    pub fn set_window(&self, window: Window) {
        self.window.send_modify(|view| view.window = window);
    }

    /// Snapshots from now on look closer at `host` (or at none).
    pub fn set_detail(&self, host: Option<String>) {
        self.window.send_modify(|view| view.host = host);
    }

    /// Snapshots from now on list the hosts `filter` takes, in `sort` order (or reversed).
    pub fn set_listing(&self, filter: &str, sort: SortKey, reverse: bool) {
        self.window.send_if_modified(|view| {
            let changed =
                (view.filter.as_str(), view.sort, view.reverse) != (filter, sort, reverse);
            if changed {
                (view.filter, view.sort, view.reverse) = (filter.to_owned(), sort, reverse);
            }
            changed
        });
    }

    /// What went wrong last, if it still is.
    pub fn problem(&self) -> Option<String> {
        self.shared.current_problem()
    }

    /// Tail records the feed could not hand over (the screen was behind).
    pub fn tail_dropped(&self) -> u64 {
        self.shared.tail_dropped.swap(0, Ordering::Relaxed)
    }

    /// The first snapshot, waiting up to `wait`; else what went wrong (a problem ends the
    /// wait early).
    pub fn first_snapshot(&self, wait: Duration) -> Result<Snapshot, String> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if let Some(snapshot) = self.snapshots.borrow().clone() {
                return Ok(snapshot);
            }
            if let Some(problem) = self.problem() {
                return Err(problem);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no snapshot came within {wait:?}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(control) = &self.control {
            // The pipeline commits what it read and stops; its store stays whole.
            control.stop.store(true, Ordering::Relaxed);
        }
        if let Some(pipeline) = self.pipeline.take() {
            let _ = pipeline.join();
        }
    }
}

fn sleep_unless(stop: &AtomicBool, duration: Duration) {
    let until = Instant::now() + duration;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn poll_snapshots(
    addr: SocketAddr,
    token: Option<&str>,
    (snapshots, view): (&watch::Sender<Option<Snapshot>>, watch::Receiver<View>),
    shared: &Shared,
) {
    while !shared.stop.load(Ordering::Relaxed) {
        let View { window, host, filter, sort, reverse } = view.borrow().clone();
        let mut path = format!(
            "/api/v1/snapshot?window={}&sort={}&reverse={reverse}&limit={HOSTS_LISTED}",
            window.as_str(),
            sort.name()
        );
        if let Some(host) = host {
            path.push_str("&host=");
            path.push_str(&query_escape(&host));
        }
        if !filter.is_empty() {
            path.push_str("&filter=");
            path.push_str(&query_escape(&filter));
        }
        let fetched = get(addr, &path, token).and_then(|(status, body)| match status {
            200 => serde_json::from_str::<Snapshot>(&body).map_err(|e| format!("snapshot: {e}")),
            _ => Err(format!("{path}: {status} {}", body.trim())),
        });
        match fetched {
            Ok(snapshot) => {
                shared.clear_problem();
                snapshots.send_replace(Some(snapshot));
            }
            Err(e) => shared.problem(format!("{addr}: {e}")),
        }
        sleep_unless(&shared.stop, SNAPSHOT_EVERY);
    }
}

fn follow_tail(addr: SocketAddr, token: Option<&str>, tail: &Sender<TailRecord>, shared: &Shared) {
    // A reconnection asks for what came after the last record seen, not the recent ones again.
    let mut last = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let path = format!("/api/v1/tail?after={last}");
        let streamed = stream(addr, &path, token, &shared.stop, |line| {
            match serde_json::from_str::<TailRecord>(line) {
                Ok(record) => {
                    last = last.max(record.seq);
                    shared.offer(tail, record);
                }
                // `{"missed": N}`: the collector dropped some for this reader.
                Err(_) => {
                    let missed = serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["missed"].as_u64())
                        .unwrap_or(0);
                    shared.tail_dropped.fetch_add(missed, Ordering::Relaxed);
                }
            }
        });
        if let Err(e) = streamed {
            shared.problem(format!("{addr} tail: {e}"));
        }
        sleep_unless(&shared.stop, SNAPSHOT_EVERY);
    }
}

/// `text` for a URL's query: letters, digits and `-._~` as they are, the rest %-escaped.
fn query_escape(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Sends `GET path` and returns the status, whether the body is chunked, and its reader;
/// `patient` waits for the body as long as it takes (a stream).
fn request(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    patient: bool,
) -> Result<(u16, bool, BufReader<TcpStream>), String> {
    let mut stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(|e| e.to_string())?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.ok_or_else(|| format!("not an HTTP answer: {}", line.trim()))?;
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        chunked |= lower.starts_with("transfer-encoding:") && lower.contains("chunked");
    }
    if patient {
        // A quiet stream is no dead one; the thread ends with the process.
        reader.get_ref().set_read_timeout(None).map_err(|e| e.to_string())?;
    }
    Ok((status, chunked, reader))
}

/// A whole answer: status and body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<(u16, String), String> {
    let (status, chunked, mut reader) = request(addr, path, token, false)?;
    let mut body = String::new();
    if chunked {
        let never = AtomicBool::new(false);
        read_chunks(&mut reader, &never, |piece| body.push_str(piece))?;
    } else {
        reader.read_to_string(&mut body).map_err(|e| e.to_string())?;
    }
    Ok((status, body))
}

/// A streamed answer, line by line, until it ends or `stop`.
fn stream(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    stop: &AtomicBool,
    mut line: impl FnMut(&str),
) -> Result<(), String> {
    let (status, chunked, mut reader) = request(addr, path, token, true)?;
    if status != 200 || !chunked {
        return Err(format!("{path}: status {status}"));
    }
    let mut pending = String::new();
    read_chunks(&mut reader, stop, |piece| {
        pending.push_str(piece);
        while let Some(end) = pending.find('\n') {
            line(&pending[..end]);
            pending.drain(..=end);
        }
    })
}

/// Reads an HTTP/1.1 chunked body, handing each chunk over as it comes.
fn read_chunks(
    reader: &mut BufReader<TcpStream>,
    stop: &AtomicBool,
    mut piece: impl FnMut(&str),
) -> Result<(), String> {
    let mut size = String::new();
    while !stop.load(Ordering::Relaxed) {
        size.clear();
        if reader.read_line(&mut size).map_err(|e| e.to_string())? == 0 {
            return Ok(());
        }
        let n = usize::from_str_radix(size.trim(), 16)
            .map_err(|_| format!("bad chunk size {size:?}"))?;
        if n == 0 {
            return Ok(());
        }
        let mut chunk = vec![0; n + 2];
        reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
        piece(&String::from_utf8_lossy(&chunk[..n]));
    }
    Ok(())
}
