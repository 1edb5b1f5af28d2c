//! `collect`: log lines into the store, committed in input order together with the position
//! they reach, and resumed from the store's checkpoint, so no line is stored twice or lost.
//!
//! Threads: a reader ([`crate::source::follow`]) cuts the input into chunks of whole lines
//! (following a file like `tail -F`, or reading to the end with `once`); `workers` parse chunks into Arrow batches;
//! the calling thread puts them back in input order and writes them into the pending commit,
//! which is made every `commit_rows` rows, once rows have waited `commit_every`, when the
//! source file changes (rotation, truncation) and at the end. Every channel is bounded, so a
//! slow disk slows the reading and memory stays flat.
//!
//! Stopping (`Control::stop`, set by SIGINT/SIGTERM) hands over every whole line read, commits
//! and returns; an unfinished last line stays in the file for the next run.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, bounded};

use crate::batch::LineContext;
use crate::export::Telemetry;
use crate::ingest::EncodingLock;
use crate::ingest::{BatchSink, TableBatch, now_ns, process_line};
use crate::live::Live;
use crate::netrange::InternalRanges;
use crate::parse::LogFormat;
use crate::rounds::{Counts, Rounds, run_rounds};
use crate::source::Input;
use crate::source::follow::{
    ReadFailure, ReadOptions, Reader, Source, Start, file_id, find_rotated,
};
use crate::source::kube::{Cursor, Instance, KubeOptions, follow_pods, reflect_workloads};
use crate::source::lines::Chunk;
use crate::source::node::{NODE_CHUNK_BYTES, NodeOptions, NodeReader};
use crate::store::upload::Spool;
use crate::store::{
    ACCESS_LOG, Checkpoint, FINDINGS, MESH_HOSTS, PROBES, PendingCommit, REJECTS, Store,
    StoreError, ZTUNNEL_CONN, split_cursor, stamp_cursor,
};
use crate::workloads::Workloads;

/// Settings of a collect run.
#[derive(Debug, Clone, Copy)]
pub struct CollectConfig {
    pub max_line: usize,
    pub chunk_bytes: usize,
    /// Rows per Arrow batch.
    pub batch_rows: usize,
    /// Rows after which a commit is made (at the next chunk boundary).
    pub commit_rows: usize,
    /// The longest parsed rows wait for their commit.
    pub commit_every: Duration,
    /// Parsing threads.
    pub workers: usize,
    /// Read to the end and return, instead of following the file.
    pub once: bool,
    /// How often a followed file is checked for new lines, truncation and rotation.
    pub poll: Duration,
    /// What counts as inside the cluster, for bypass findings.
    pub internal: InternalRanges,
    /// Remove hour partitions older than this, after commits (at most once a minute).
    pub retain: Option<Duration>,
    /// Merge the small files of hours that ended more than an hour ago, at most this often.
    pub compact_every: Option<Duration>,
    /// What is taken out of each line before it is stored, exported or shown.
    pub redact: crate::redact::Redaction,
}

impl Default for CollectConfig {
    fn default() -> Self {
        CollectConfig {
            max_line: crate::source::lines::DEFAULT_MAX_LINE,
            chunk_bytes: 1 << 20,
            batch_rows: 64 * 1024,
            commit_rows: 1024 * 1024,
            commit_every: Duration::from_secs(30),
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            once: true,
            poll: Duration::from_millis(200),
            internal: InternalRanges::default(),
            retain: None,
            compact_every: None,
            redact: crate::redact::Redaction::default(),
        }
    }
}

impl CollectConfig {
    /// How its reader reads.
    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            chunk_bytes: self.chunk_bytes,
            max_line: self.max_line,
            once: self.once,
            poll: self.poll,
        }
    }
}

/// Shared with the caller while a run goes on: a stop request, and progress counters.
#[derive(Debug, Default)]
pub struct Control {
    pub stop: AtomicBool,
    /// Bytes read from the input.
    pub bytes: AtomicU64,
    /// Lines parsed.
    pub lines: AtomicU64,
    /// Rows (records and rejects) committed.
    pub committed: AtomicU64,
    /// Where metrics and spans of what is parsed go, when they are exported.
    pub telemetry: Option<Arc<Telemetry>>,
    /// The live view the status API serves, set once it runs.
    pub live: OnceLock<Arc<Live>>,
    /// With a store on object storage: the local store is its spool, told of every commit.
    pub spool: Option<Arc<Spool>>,
}

/// What a collect run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectSummary {
    /// Where reading started in the file the store's checkpoint names.
    pub resumed_at: u64,
    /// A rotated file finished first, from the checkpoint on.
    pub finished_rotated: Option<PathBuf>,
    /// Bytes read.
    pub bytes: u64,
    pub records: usize,
    pub rejects: usize,
    /// ztunnel connection records.
    pub ztunnel: usize,
    /// Rows of findings evidence (one per kind, host and source in a chunk).
    pub findings: usize,
    /// Probe answers stored.
    pub probes: usize,
    /// Mesh snapshot and probe rounds run, each with those whose rows were dropped (the
    /// committer was behind).
    pub rounds: [(u64, u64); 2],
    /// Mesh snapshot rows stored.
    pub mesh_hosts: usize,
    pub commits: usize,
    /// Hour partitions removed by retention.
    pub expired: usize,
    /// Files merged away by compaction.
    pub compacted: usize,
    /// Stream cursors dropped past the limit a commit carries.
    pub cursors_dropped: u64,
    /// Warnings for the operator (a rotated file that could not be found, a truncation).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {name}")]
    Read {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{name} is gzip-compressed: it cannot grow, so read it with --once")]
    FollowGzip { name: String },
    #[error("following pods through the Kubernetes API failed")]
    Kube(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a source stands after a chunk.
#[derive(Debug, Clone)]
enum Position {
    /// A byte offset in a file.
    Offset(u64),
    /// A stream's cursor (a pod's through the API, a node's CRI files).
    Stream(String),
}

/// A chunk on its way to a worker.
struct Work {
    seq: u64,
    chunk: Chunk,
    encoding: Option<LogFormat>,
    source: Arc<Source>,
    position: Position,
}

/// One chunk parsed by a worker: its batches, and where its source stands after it (with
/// the stream's encoding, which its checkpoint keeps).
struct Parsed {
    seq: u64,
    batches: Vec<TableBatch>,
    source: Arc<Source>,
    position: Position,
    encoding: Option<LogFormat>,
}

/// Hands a chunk to the workers; false once they are gone.
type Handoff<'a> = dyn FnMut(Chunk, Option<LogFormat>, &Arc<Source>, Position) -> bool + 'a;

/// Looks up where `path` was left: its own checkpoint, or, when the store's newest commit from
/// this path came from another file, that file under a rotated name (`PATH.1`, `PATH.<ts>`).
fn plan_start(path: &Path, store: &Store) -> Result<Start, CollectError> {
    let read_err = |source| CollectError::Read { name: path.display().to_string(), source };
    let id = match fs::metadata(path) {
        Ok(meta) => Some(file_id(&meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(e)),
    };
    // Read alone, or with others (`collect_files`): the newest commit that read it says.
    if let Some(id) = &id
        && let Some(last) = store.file_checkpoint(id, FILES_SOURCE)?
    {
        let lock = EncodingLock::resumed(last.encoding.as_deref());
        return Ok(Start { offset: last.offset, lock, ..Start::default() });
    }
    let Some(last) = store.checkpoint_of_path(&path.display().to_string())? else {
        return Ok(Start::default());
    };
    if !last.source.starts_with("file:") {
        return Ok(Start::default());
    }
    match find_rotated(path, &last.source).map_err(read_err)? {
        Some(rotated) => Ok(Start {
            rotated: Some((rotated, last.offset)),
            lock: EncodingLock::resumed(last.encoding.as_deref()),
            ..Start::default()
        }),
        None => Ok(Start {
            warning: Some(format!(
                "{} was replaced since the last run and the file it was ({}) is not among its \
                 rotated names: lines written to that file after byte {} are not in the store",
                path.display(),
                last.source,
                last.offset
            )),
            ..Start::default()
        }),
    }
}

/// Reads `input` into `store` from where the store says it was left, until its end (`once`,
/// stdin) or until `control.stop`.
pub fn collect(
    input: &Input,
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
) -> Result<CollectSummary, CollectError> {
    let mut summary = CollectSummary::default();
    let start = match input {
        Input::Path(path) => plan_start(path, store)?,
        Input::Stdin | Input::Memory { .. } => Start::default(),
    };
    summary.resumed_at = start.offset;
    summary.finished_rotated = start.rotated.as_ref().map(|(path, _)| path.clone());
    if let Some(live) = control.live.get() {
        live.readiness.sources.store(true, Ordering::Relaxed);
    }
    summary.warnings.extend(start.warning.clone());
    let read = move |hand: &mut Handoff<'_>, spare| {
        let mut file_hand = |chunk: Chunk, encoding, source: &Arc<Source>| {
            let position = Position::Offset(source.base + chunk.end_offset());
            hand(chunk, encoding, source, position)
        };
        let options = config.read_options();
        let mut reader = Reader::new(options, &control.stop, &control.bytes, &mut file_hand, spare);
        let mut warnings = Vec::new();
        reader.run(input, start, &mut warnings).map_err(|failure| read_error(input, failure))?;
        Ok(warnings)
    };
    let feeds = Feeds::default();
    run_pipeline(store, config, control, &mut summary, Reached::File(None), feeds, read)?;
    Ok(summary)
}

/// The source name of files read together (`collect_files`), whose cursors are offsets.
pub const FILES_SOURCE: &str = "files";

/// Reads several files at once into `store`, each followed like `tail -F` (or, with `once`,
/// to its end) on a thread of its own. They are one source of streams, so every commit
/// carries each file's offset and lines of different files share commits. Each file resumes
/// from where it was left, read alone or together.
pub fn collect_files(
    paths: &[PathBuf],
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
) -> Result<CollectSummary, CollectError> {
    let mut summary = CollectSummary::default();
    let mut starts = Vec::with_capacity(paths.len());
    for path in paths {
        let start = plan_start(path, store)?;
        summary.warnings.extend(start.warning.clone());
        starts.push((Input::Path(path.clone()), start));
    }
    if let Some(live) = control.live.get() {
        live.readiness.sources.store(true, Ordering::Relaxed);
    }
    let read = move |hand: &mut Handoff<'_>, spare: crossbeam_channel::Receiver<Vec<u8>>| {
        let (tx, rx) = bounded::<(Chunk, Option<LogFormat>, Arc<Source>)>(starts.len());
        std::thread::scope(|scope| {
            let readers: Vec<_> = starts
                .into_iter()
                .map(|(input, start)| {
                    let (tx, spare) = (tx.clone(), spare.clone());
                    scope.spawn(move || {
                        let mut file_hand = |chunk, encoding, source: &Arc<Source>| {
                            tx.send((chunk, encoding, source.clone())).is_ok()
                        };
                        let options = config.read_options();
                        let (stop, bytes) = (&control.stop, &control.bytes);
                        let mut reader = Reader::new(options, stop, bytes, &mut file_hand, spare);
                        let mut warnings = Vec::new();
                        let read = reader.run(&input, start, &mut warnings);
                        read.map(|()| warnings).map_err(|failure| read_error(&input, failure))
                    })
                })
                .collect();
            drop(tx);
            for (chunk, encoding, source) in &rx {
                let offset = source.base + chunk.end_offset();
                if !hand(chunk, encoding, &source, Position::Stream(offset.to_string())) {
                    break;
                }
            }
            // A refused chunk ends the readers: their next hand-over finds nobody.
            drop(rx);
            let mut warnings = Vec::new();
            for reader in readers {
                warnings.extend(reader.join().expect("a file reader panicked")?);
            }
            Ok(warnings)
        })
    };
    let reached = Reached::streams(FILES_SOURCE.to_owned(), store.cursors(FILES_SOURCE)?);
    run_pipeline(store, config, control, &mut summary, reached, Feeds::default(), read)?;
    Ok(summary)
}

fn read_error(input: &Input, failure: ReadFailure) -> CollectError {
    match failure {
        ReadFailure::Io(source) => CollectError::Read { name: input.name(), source },
        ReadFailure::Gzip => CollectError::FollowGzip { name: input.name() },
    }
}

/// Follows the Kubernetes pods each of `pods` selects (waypoints, and ztunnel when asked)
/// into `store` until `control.stop`, resuming every container instance from the cursors of
/// the newest commit of `kube:<cluster>`.
pub fn collect_kube(
    kube_config: ::kube::Config,
    (pods, rounds): (Vec<KubeOptions>, Rounds),
    cluster: Option<String>,
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
) -> Result<CollectSummary, CollectError> {
    let source = format!("kube:{}", cluster.as_deref().unwrap_or("default"));
    let stored = store.cursors(&source)?;
    let cursors: HashMap<String, Cursor> = stored
        .iter()
        .filter_map(|(id, c)| Some((id.clone(), split_cursor(c).0.parse().ok()?)))
        .collect();
    let locks: HashMap<String, EncodingLock> = stored
        .iter()
        .map(|(id, c)| (id.clone(), EncodingLock::resumed(split_cursor(c).1)))
        .collect();
    let mut summary = CollectSummary::default();
    let resolve = pods.iter().any(|p| p.resolve_sources);
    let workloads = resolve.then(|| Arc::new(Workloads::default()));
    // A round's rows at a time; a slow committer makes rounds drop theirs (counted).
    let (side_tx, side) = bounded(4);
    let counts = Arc::new(Counts::default());
    let rounds = (rounds, side_tx, counts.clone());
    let following =
        Following { pods, cluster, cursors, locks, workloads: workloads.clone(), rounds };
    let read = move |hand: &mut Handoff<'_>, _spare| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|source| CollectError::Read {
                name: source_name(&following.cluster),
                source,
            })?;
        runtime.block_on(follow_into(kube_config, following, config, control, hand))?;
        Ok(Vec::new())
    };
    let reached = Reached::streams(source, stored);
    let feeds = Feeds { workloads: workloads.as_deref(), side };
    run_pipeline(store, config, control, &mut summary, reached, feeds, read)?;
    summary.rounds = [&counts.mesh, &counts.probes]
        .map(|c| (c.rounds.load(Ordering::Relaxed), c.dropped.load(Ordering::Relaxed)));
    summary.warnings.extend(counts.mesh.warnings("mesh snapshot"));
    summary.warnings.extend(counts.probes.warnings("probe"));
    Ok(summary)
}

/// Follows the CRI log files of the containers `node` selects into `store` until
/// `control.stop` (or, with `once`, to the end of every file), resuming every container
/// instance from the cursors of the newest commit of `node:<root>`.
pub fn collect_node(
    node: NodeOptions,
    cluster: Option<String>,
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
) -> Result<CollectSummary, CollectError> {
    let source = format!("node:{}", node.root.display());
    let stored = store.cursors(&source)?;
    if let Some(live) = control.live.get() {
        // The node's files are found by scanning, from the first round on.
        live.readiness.sources.store(true, Ordering::Relaxed);
    }
    let mut summary = CollectSummary::default();
    let name = node.root.display().to_string();
    let cursors = stored.iter().map(|(id, c)| (id.clone(), c.clone())).collect();
    let read = move |hand: &mut Handoff<'_>, spare| {
        let reader = NodeReader {
            options: node,
            read: ReadOptions {
                chunk_bytes: config.chunk_bytes.min(NODE_CHUNK_BYTES),
                ..config.read_options()
            },
            cluster,
            cursors,
            stop: &control.stop,
            bytes: &control.bytes,
            spare,
        };
        let mut warnings = Vec::new();
        let mut stream_hand = |chunk, encoding, source: &Arc<Source>, cursor| {
            hand(chunk, encoding, source, Position::Stream(cursor))
        };
        reader
            .run(&mut stream_hand, &mut warnings)
            .map_err(|source| CollectError::Read { name, source })?;
        Ok(warnings)
    };
    let reached = Reached::streams(source, stored);
    run_pipeline(store, config, control, &mut summary, reached, Feeds::default(), read)?;
    Ok(summary)
}

/// What a Kubernetes reader follows, from where, the workload directory it keeps, and the
/// probe rounds it runs beside (with where their rows go).
struct Following {
    pods: Vec<KubeOptions>,
    cluster: Option<String>,
    cursors: HashMap<String, Cursor>,
    /// The encoding each stored stream was locked to.
    locks: HashMap<String, EncodingLock>,
    workloads: Option<Arc<Workloads>>,
    rounds: (Rounds, crossbeam_channel::Sender<TableBatch>, Arc<Counts>),
}

fn source_name(cluster: &Option<String>) -> String {
    format!("the Kubernetes API ({})", cluster.as_deref().unwrap_or("default cluster"))
}

/// Pod lines as chunks for the workers, each with its instance's source and cursor.
async fn follow_into(
    kube_config: ::kube::Config,
    following: Following,
    config: &CollectConfig,
    control: &Control,
    hand: &mut Handoff<'_>,
) -> Result<(), CollectError> {
    // The client's connection tasks run on this runtime, so it is made here.
    let client = ::kube::Client::try_from(kube_config).map_err(|e| CollectError::Kube(e.into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let Following { pods, cluster, cursors, locks, workloads, rounds: (rounds, side, counts) } =
        following;
    tokio::spawn(run_rounds(client.clone(), rounds, side, counts, stopped.clone()));
    if let Some(workloads) = workloads {
        let (listed, list_done) = tokio::sync::oneshot::channel();
        tokio::spawn(reflect_workloads(client.clone(), workloads, listed, stopped.clone()));
        // Sources are named from the first line on: wait for the first full pod list (for a
        // while; a slow API server does not hold the collector back for long).
        let _ = tokio::time::timeout(WORKLOADS_LIST_WAIT, list_done).await;
    }
    let mut follows = tokio::task::JoinSet::new();
    let mut listed = Vec::new();
    for options in pods {
        let (client, cursors, tx) = (client.clone(), cursors.clone(), tx.clone());
        let done = Arc::new(AtomicBool::new(false));
        listed.push(done.clone());
        follows.spawn(follow_pods(client, options, cursors, (tx, done), stopped.clone()));
    }
    drop(tx);
    if let Some(live) = control.live.get().cloned() {
        // Ready once every watch has listed its pods (their followers start from that list).
        tokio::spawn(async move {
            while !listed.iter().all(|l| l.load(Ordering::Relaxed)) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            live.readiness.sources.store(true, Ordering::Relaxed);
        });
    }
    // Per instance: its source, next line number and encoding; bounded (forgotten wholesale
    // past the limit, which only restarts line numbers and the encoding check).
    let mut instances: HashMap<Arc<Instance>, (Arc<Source>, u64, EncodingLock)> = HashMap::new();
    let mut closed = false;
    loop {
        let lines = tokio::select! {
            lines = rx.recv() => lines,
            () = tokio::time::sleep(config.poll) => {
                if control.stop.load(Ordering::Relaxed) {
                    stop.send_replace(true);
                }
                continue;
            }
        };
        let Some(lines) = lines else { break };
        if closed {
            continue;
        }
        if instances.len() >= MAX_INSTANCES && !instances.contains_key(&lines.instance) {
            instances.clear();
        }
        let (source, line_no, lock) =
            instances.entry(lines.instance.clone()).or_insert_with(|| {
                let instance = &lines.instance;
                let source = Source {
                    id: instance.source_id(),
                    path: Some(format!("{}/{}", instance.namespace, instance.pod)),
                    base: 0,
                    pod: Some((cluster.clone(), instance.clone())),
                };
                let lock = locks.get(&source.id).copied().unwrap_or_default();
                (Arc::new(source), 1, lock)
            });
        control.bytes.fetch_add(lines.bytes.len() as u64, Ordering::Relaxed);
        let count = memchr::memchr_iter(b'\n', &lines.bytes).count() as u64;
        let len = lines.bytes.len();
        let chunk = Chunk::Lines { buf: lines.bytes, len, first_line_no: *line_no, end_offset: 0 };
        *line_no += count;
        lock.observe_chunk(&chunk, config.max_line);
        if !hand(chunk, lock.encoding(), source, Position::Stream(lines.cursor.to_string())) {
            // The committer failed: stop following, drain what is in flight.
            stop.send_replace(true);
            closed = true;
        }
    }
    while let Some(done) = follows.join_next().await {
        done.map_err(|e| CollectError::Kube(e.into()))?
            .map_err(|e| CollectError::Kube(e.into()))?;
    }
    Ok(())
}

/// How long following waits for the first list of pods when sources are resolved.
const WORKLOADS_LIST_WAIT: Duration = Duration::from_secs(30);

/// Most container instances whose line numbers and encodings are remembered at once.
const MAX_INSTANCES: usize = 10_000;

/// What the pipeline takes besides the reader's chunks.
struct Feeds<'a> {
    /// Pod IPs to workloads, for the workers.
    workloads: Option<&'a Workloads>,
    /// Batches made elsewhere (probe rounds), written into the next commit.
    side: crossbeam_channel::Receiver<TableBatch>,
}

impl Default for Feeds<'_> {
    fn default() -> Self {
        Feeds { workloads: None, side: crossbeam_channel::never() }
    }
}

/// The pipeline around a reader: `read` runs on its own thread and hands chunks over (with
/// the position each reaches) and returns its warnings; workers parse; this thread commits.
fn run_pipeline<R>(
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
    summary: &mut CollectSummary,
    reached: Reached,
    Feeds { workloads, side }: Feeds<'_>,
    read: R,
) -> Result<(), CollectError>
where
    R: FnOnce(
            &mut Handoff<'_>,
            crossbeam_channel::Receiver<Vec<u8>>,
        ) -> Result<Vec<String>, CollectError>
        + Send,
{
    let workers = config.workers.max(1);
    // Bounded at both ends: the reader waits for workers, workers wait for the committer.
    let (work_tx, work_rx) = bounded::<Work>(workers * 2);
    let (parsed_tx, parsed_rx) = bounded::<Parsed>(workers * 2);
    // Chunk buffers go back to the reader: fresh ones cost page faults and zeroing.
    let (spare_tx, spare_rx) = bounded::<Vec<u8>>(workers * 4);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let channels = (work_rx.clone(), parsed_tx.clone(), spare_tx.clone());
            scope.spawn(move || parse_chunks(channels, config, control, workloads));
        }
        drop((work_rx, parsed_tx, spare_tx));
        let reader = scope.spawn(move || {
            let mut seq = 0;
            let mut hand = |chunk, encoding, source: &Arc<Source>, position| {
                let work = Work { seq, chunk, encoding, source: source.clone(), position };
                seq += 1;
                work_tx.send(work).is_ok()
            };
            read(&mut hand, spare_rx)
        });
        let committed =
            commit_in_order((&parsed_rx, side), store, config, control, summary, reached);
        if committed.is_err() {
            // Stop the reader, even one waiting for its file to grow.
            control.stop.store(true, Ordering::Relaxed);
        }
        drop(parsed_rx);
        let read = reader.join().expect("the reader thread panicked");
        committed?;
        summary.warnings.extend(read?);
        summary.bytes = control.bytes.load(Ordering::Relaxed);
        Ok(())
    })
}

/// A worker's chunks in, parsed chunks out, and spent buffers back to the reader.
type WorkerChannels = (
    crossbeam_channel::Receiver<Work>,
    crossbeam_channel::Sender<Parsed>,
    crossbeam_channel::Sender<Vec<u8>>,
);

fn parse_chunks(
    (work, parsed, spare): WorkerChannels,
    config: &CollectConfig,
    control: &Control,
    workloads: Option<&Workloads>,
) {
    let shard = control.telemetry.as_deref().and_then(Telemetry::shard);
    let live_shard = control.live.get().map(|live| live.shard());
    for Work { seq, chunk, encoding, source, position } in work {
        let mut batches = Vec::new();
        // Builders are sized for this chunk's lines (waypoint lines run near a kilobyte), not
        // for a whole batch: a worker makes one set per chunk.
        let expected = (chunk.len_bytes() / 1024).clamp(64, config.batch_rows);
        let origin = source.path.as_deref().unwrap_or("stdin");
        let (cluster, pod) = match &source.pod {
            Some((cluster, instance)) => (cluster.as_deref(), Some(&**instance)),
            None => (None, None),
        };
        let telemetry = control.telemetry.as_deref().map(|telemetry| {
            telemetry.chunk(shard.as_deref(), chunk.len_bytes() as u64, pod.map(|p| p.pod.as_str()))
        });
        let live = control.live.get().zip(live_shard.as_deref()).map(|(live, shard)| {
            let name = pod.map_or(origin, |p| p.pod.as_str());
            live.chunk(shard, name, workloads)
        });
        let mut sink = BatchSink::new(expected, config.internal, |b| batches.push(b))
            .with_telemetry(telemetry)
            .with_live(live);
        let ctx = LineContext {
            origin,
            ingest_ts_ns: now_ns(),
            encoding,
            cluster,
            namespace: pod.map(|p| p.namespace.as_str()),
            pod: pod.map(|p| p.pod.as_str()),
            workloads,
            redact: config.redact,
            ..LineContext::default()
        };
        let mut lines = 0;
        chunk.lines(config.max_line, |line| {
            process_line(line, &ctx, &mut sink);
            lines += 1;
        });
        sink.flush();
        // Gives `batches` back, and unlocks the worker's metrics shard.
        drop(sink);
        control.lines.fetch_add(lines, Ordering::Relaxed);
        if let Some(buffer) = chunk.into_buffer() {
            // Full means enough are waiting; this one is freed.
            let _ = spare.try_send(buffer);
        }
        if parsed.send(Parsed { seq, batches, source, position, encoding }).is_err() {
            return;
        }
    }
}

/// Most files one commit keeps open (one per table and hour its rows fall in); more, and the
/// commit is made early. Bounds the writers' memory when old logs span many hours.
const MAX_OPEN_FILES: usize = 32;

/// Takes parsed chunks as they come, puts them back in input order, and writes them into the
/// pending commit; makes the commit when it is big enough, old enough, or its source changes.
fn commit_in_order(
    (parsed, mut side): (
        &crossbeam_channel::Receiver<Parsed>,
        crossbeam_channel::Receiver<TableBatch>,
    ),
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
    summary: &mut CollectSummary,
    mut reached: Reached,
) -> Result<(), CollectError> {
    let mut committer = Committer {
        store,
        config,
        control,
        summary,
        last_expiry: None,
        last_compaction: Instant::now(),
    };
    committer.maintain()?;
    let mut waiting: BTreeMap<u64, Parsed> = BTreeMap::new();
    let mut next_seq = 0;
    let mut pending = committer.store.begin();
    // When the pending commit's first row came.
    let mut since: Option<Instant> = None;
    loop {
        let deadline = since.map_or_else(crossbeam_channel::never, |t| {
            crossbeam_channel::at(t + config.commit_every)
        });
        let received = crossbeam_channel::select! {
            recv(parsed) -> chunk => chunk.map_err(|_| RecvTimeoutError::Disconnected),
            recv(side) -> batch => {
                match batch {
                    Ok(batch) => {
                        if let (Some(telemetry), TableBatch::Findings(rows)) =
                            (&control.telemetry, &batch)
                        {
                            telemetry.findings_rows(rows);
                        }
                        committer.write(&mut pending, batch)?;
                        since.get_or_insert_with(Instant::now);
                    }
                    // Its sender is gone: nothing more comes this way.
                    Err(_) => side = crossbeam_channel::never(),
                }
                continue;
            }
            recv(deadline) -> _ => Err(RecvTimeoutError::Timeout),
        };
        let chunk = match received {
            Ok(chunk) => chunk,
            Err(RecvTimeoutError::Timeout) => {
                pending = committer.commit(pending, &reached)?;
                since = None;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        waiting.insert(chunk.seq, chunk);
        while let Some(chunk) = waiting.remove(&next_seq) {
            next_seq += 1;
            if reached.changes_file(&chunk.source) {
                // Each commit covers one file: the checkpoint names one position.
                pending = committer.commit(pending, &reached)?;
                since = None;
            }
            for batch in chunk.batches {
                committer.write(&mut pending, batch)?;
            }
            let dropped = &mut committer.summary.cursors_dropped;
            reached.advance(chunk.source, chunk.position, chunk.encoding, dropped);
            if since.is_none() && pending.rows() > 0 {
                since = Some(Instant::now());
            }
            if pending.rows() >= config.commit_rows || pending.open_files() > MAX_OPEN_FILES {
                pending = committer.commit(pending, &reached)?;
                since = None;
            }
        }
    }
    committer.commit(pending, &reached)?;
    Ok(())
}

/// Most stream cursors a commit carries; past it, those of the streams heard from longest
/// ago are dropped (a pod gone for long), and counted.
const MAX_CURSORS: usize = 10_000;

/// What the pending commit reaches.
#[derive(Debug)]
enum Reached {
    /// One file (or stdin), the offset after its last chunk and its encoding.
    File(Option<(Arc<Source>, u64, Option<LogFormat>)>),
    /// Every stream of one source (pods) and its cursor: all of them go into each commit.
    Streams {
        source: String,
        cursors: BTreeMap<String, String>,
        /// When each stream was last heard from (a count of chunks), for dropping the
        /// stalest cursor past the limit.
        heard: HashMap<String, u64>,
        chunks: u64,
    },
}

impl Reached {
    fn streams(source: String, cursors: BTreeMap<String, String>) -> Reached {
        Reached::Streams { source, cursors, heard: HashMap::new(), chunks: 0 }
    }

    /// Whether a chunk of `source` starts another file than the pending commit's.
    fn changes_file(&self, source: &Arc<Source>) -> bool {
        matches!(self, Reached::File(Some((current, ..))) if !Arc::ptr_eq(current, source))
    }

    fn advance(
        &mut self,
        source: Arc<Source>,
        position: Position,
        encoding: Option<LogFormat>,
        dropped: &mut u64,
    ) {
        match (self, position) {
            (Reached::File(reached), Position::Offset(offset)) => {
                *reached = Some((source, offset, encoding));
            }
            (Reached::Streams { cursors, heard, chunks, .. }, Position::Stream(cursor)) => {
                *chunks += 1;
                heard.insert(source.id.clone(), *chunks);
                let stored = stamp_cursor(&cursor, encoding.map(LogFormat::as_str));
                cursors.insert(source.id.clone(), stored);
                if cursors.len() > MAX_CURSORS {
                    // Streams resumed from the store and not heard from since count as oldest.
                    let oldest = cursors
                        .keys()
                        .min_by_key(|id| heard.get(*id).copied().unwrap_or(0))
                        .cloned();
                    if let Some(oldest) = oldest {
                        cursors.remove(&oldest);
                        heard.remove(&oldest);
                        *dropped += 1;
                    }
                }
            }
            (reached, position) => unreachable!("{position:?} does not go with {reached:?}"),
        }
    }
}

/// Makes commits, and keeps the store in shape between them.
struct Committer<'a> {
    store: &'a mut Store,
    config: &'a CollectConfig,
    control: &'a Control,
    summary: &'a mut CollectSummary,
    last_expiry: Option<Instant>,
    last_compaction: Instant,
}

impl Committer<'_> {
    /// Writes `batch` into `pending`, counting its rows.
    fn write(&mut self, pending: &mut PendingCommit, batch: TableBatch) -> Result<(), StoreError> {
        let summary = &mut *self.summary;
        let (table, batch, count) = match batch {
            TableBatch::AccessLog(b) => (ACCESS_LOG, b, &mut summary.records),
            TableBatch::Rejects(b) => (REJECTS, b, &mut summary.rejects),
            TableBatch::Ztunnel(b) => (ZTUNNEL_CONN, b, &mut summary.ztunnel),
            TableBatch::Findings(b) => (FINDINGS, b, &mut summary.findings),
            TableBatch::Probes(b) => (PROBES, b, &mut summary.probes),
            TableBatch::MeshHosts(b) => (MESH_HOSTS, b, &mut summary.mesh_hosts),
        };
        *count += batch.num_rows();
        pending.write(table, &batch)
    }

    /// Commits `pending` as reaching `reached`, and returns the next pending commit.
    fn commit(
        &mut self,
        pending: PendingCommit,
        reached: &Reached,
    ) -> Result<PendingCommit, StoreError> {
        let placing = self.control.spool.as_deref().map(Spool::placing);
        let written = match reached {
            Reached::File(None) => return Ok(pending),
            Reached::File(Some((source, offset, encoding))) => {
                let checkpoint = Checkpoint {
                    source: source.id.clone(),
                    offset: *offset,
                    encoding: encoding.map(|e| e.as_str().to_owned()),
                };
                self.store.finish(pending, &checkpoint, source.path.as_deref())?
            }
            Reached::Streams { source, cursors, .. } => {
                self.store.finish_streams(pending, source, cursors)?
            }
        };
        if let Some(spool) = &self.control.spool
            && written.files > 0
        {
            spool.committed(written, placing, &self.control.stop)?;
        }
        self.summary.commits += usize::from(written.files > 0);
        if let Some(telemetry) = &self.control.telemetry
            && written.files > 0
        {
            telemetry.commit();
        }
        self.control.committed.fetch_add(written.rows as u64, Ordering::Relaxed);
        self.maintain()?;
        Ok(self.store.begin())
    }

    /// Retention at most once a minute, compaction at most every `compact_every`.
    fn maintain(&mut self) -> Result<(), StoreError> {
        if let Some(age) = self.config.retain
            && self.last_expiry.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            let cutoff = now_ns().saturating_sub(age.as_nanos() as i64);
            self.summary.expired += self.store.expire(cutoff)?.len();
            self.last_expiry = Some(Instant::now());
        }
        if let Some(every) = self.config.compact_every
            && self.last_compaction.elapsed() >= every
        {
            let hour_ago = now_ns().saturating_sub(3_600_000_000_000);
            self.summary.compacted += self.store.compact(hour_ago)?.files_replaced;
            self.last_compaction = Instant::now();
        }
        Ok(())
    }
}
