//! The collector's live view, read by the status API and by `top`: egress stats over time
//! windows (with the findings they note), the most recent records, and each source's progress.
//!
//! Each parsing worker records its chunks' lines into a stats table of its own (a [`Shard`],
//! locked for a chunk at a time), and hands the rest over at the chunk's end, so the shared
//! state is locked once per chunk. A [`Snapshot`] takes what the shards gathered since the
//! last one (swapping in empty tables) and merges it into the view's table; a worker whose
//! shard has gathered for a second merges it in itself, read or not. So merging is done about
//! once a second, not once per chunk, and a shard holds a second's worth at most.
//!
//! Everything is bounded: the stats by their host limit, the recent records by
//! [`RECENT_KEEP`], the sources by [`MAX_SOURCES`], a slow tail subscriber by its channel
//! (it is told how many records it missed).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::batch::LineContext;
use crate::filter::Filter;
use crate::findings::{self, Findings};
use crate::ingest::LineSink;
use crate::parse::derived::host_of_address;
use crate::parse::time::format_rfc3339_ms;
use crate::parse::ztunnel::Connection;
use crate::parse::{Entry, Projection, RejectReason};
use crate::report::{SortKey, host_order};
use crate::stats::topk::TopK;
use crate::stats::{
    EgressStats, HostDetail, HostReport, StatsConfig, StatsReport, TopEntry, Window,
};
use crate::workloads::Workloads;

/// Recent records kept for a new tail subscriber and for `top`'s tail view.
pub const RECENT_KEEP: usize = 2_000;

/// Records a chunk hands to the tail at most (its last ones): a person reads a tail, and at
/// a hundred thousand lines a second it is a sample either way.
const TAIL_PER_CHUNK: usize = 64;

/// Records a tail subscriber may fall behind by before it misses some.
const TAIL_CHANNEL: usize = 4_096;

/// Sources (pods, files) whose progress is kept; more are counted, not listed.
pub const MAX_SOURCES: usize = 4_096;

/// Hosts whose upstream addresses are kept, and addresses per host (Space-Saving: past it the
/// counts are upper bounds).
pub const MAX_UPSTREAM_HOSTS: usize = 20_000;
const UPSTREAMS_PER_HOST: usize = 8;

/// Separates host and upstream in a chunk's counting key (neither can hold it).
const KEY_SEPARATOR: char = '\u{1f}';

/// One record as the tail shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TailRecord {
    /// Grows from one record to the next, across collector restarts too (it starts from the
    /// clock), so a reader that reconnects asks for those after the last it saw.
    #[serde(default)]
    pub seq: u64,
    /// The record's own time (RFC 3339, ms).
    pub time: String,
    #[serde(skip)]
    pub ts_ns: i64,
    pub host: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub status: Option<u16>,
    pub flags: Option<String>,
    pub duration_ms: Option<f64>,
    pub bytes_sent: Option<u64>,
    pub bytes_received: Option<u64>,
    /// `namespace/workload` when the source IP resolves, else the IP.
    pub source: Option<String>,
    pub upstream_host: Option<String>,
    /// Where the line came from: a pod or a file.
    pub origin: String,
}

impl TailRecord {
    /// Overwrites this record with `entry`, reusing its strings' room. The time and a
    /// source's workload are filled in by [`Self::finish`], for the records kept only.
    fn fill(&mut self, entry: &Entry<'_>, ctx: &LineContext<'_>) {
        fn set(field: &mut Option<String>, value: Option<&str>) {
            match (field.as_mut(), value) {
                (Some(kept), Some(value)) => {
                    kept.clear();
                    kept.push_str(value);
                }
                (_, value) => *field = value.map(str::to_owned),
            }
        }
        self.ts_ns = ctx.record_ts(entry);
        self.host.clear();
        self.host.push_str(entry.host().unwrap_or("-"));
        set(&mut self.method, entry.method.as_deref());
        set(&mut self.path, entry.path.as_deref());
        self.status = entry.response_code;
        set(&mut self.flags, entry.response_flags.as_deref().filter(|f| *f != "-"));
        self.duration_ms = entry.duration_ms;
        self.bytes_sent = entry.bytes_sent;
        self.bytes_received = entry.bytes_received;
        set(&mut self.source, entry.downstream_remote_address.as_deref().map(host_of_address));
        set(&mut self.upstream_host, entry.upstream_host.as_deref());
        self.origin.clear();
        self.origin.push_str(ctx.pod.unwrap_or(ctx.origin));
    }

    /// The time as text, and the source as its workload when `workloads` knows the IP.
    fn finish(mut self, workloads: Option<&Workloads>) -> TailRecord {
        self.time = format_rfc3339_ms(self.ts_ns);
        let workload = self.source.as_deref().and_then(|ip| workloads?.lookup(ip));
        if let Some(w) = workload {
            self.source = Some(format!("{}/{}", w.namespace, w.name));
        }
        self
    }
}

/// How far one source has got.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceProgress {
    pub source: String,
    pub lines: u64,
    pub records: u64,
    /// The newest record's own time (RFC 3339, ms).
    pub last_record: Option<String>,
    /// How far behind its newest record the collector parsed it, when it did.
    pub lag_seconds: Option<f64>,
    /// The newest record's time, as a number (not sent: `last_record` says it).
    #[serde(skip)]
    pub newest_ns: Option<i64>,
}

/// Whether the collector is ready: its store is writable and its sources are connected.
#[derive(Debug, Default)]
pub struct Readiness {
    pub store: AtomicBool,
    pub sources: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.store.load(Ordering::Relaxed) && self.sources.load(Ordering::Relaxed)
    }
}

/// The collector's own counts, as the snapshot shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SelfCounts {
    pub bytes_read: u64,
    pub lines: u64,
    pub rows_committed: u64,
    /// Sources not listed because [`MAX_SOURCES`] were.
    pub sources_unlisted: u64,
    /// Requests whose upstream address was not kept: their host came past
    /// [`MAX_UPSTREAM_HOSTS`].
    #[serde(default)]
    pub upstreams_unkept: u64,
}

impl SelfCounts {
    /// The counts `control` keeps (the live view adds its own at the snapshot).
    pub fn of(control: &crate::collect::Control) -> SelfCounts {
        SelfCounts {
            bytes_read: control.bytes.load(Ordering::Relaxed),
            lines: control.lines.load(Ordering::Relaxed),
            rows_committed: control.committed.load(Ordering::Relaxed),
            ..SelfCounts::default()
        }
    }
}

/// What the status API's `/api/v1/snapshot` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub ready: bool,
    /// When it was taken (wall clock, RFC 3339, ms).
    pub taken_at: String,
    /// The stats (`hosts` as `stats -o json` has them), findings and rejects.
    #[serde(flatten)]
    pub stats: StatsReport,
    pub sources: Vec<SourceProgress>,
    /// Hosts in the view, and how many of them the listing's filter took: `hosts` holds the
    /// first `limit` of those (see [`Listing`]).
    #[serde(default)]
    pub hosts_total: usize,
    #[serde(default)]
    pub hosts_matched: usize,
    pub collector: SelfCounts,
    /// The host asked for (`?host=`), closer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<HostDetail>,
}

/// Which hosts a snapshot lists: those `filter` takes, and of them, when `limit` is less,
/// the first `limit` in `sort` order (or its reverse). With a filter, only the findings of
/// the hosts it takes. A screen shows a few dozen rows: at 10 000 hosts, asking for the first
/// thousand keeps the answer a tenth of the size.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub filter: Filter,
    pub sort: SortKey,
    pub reverse: bool,
    pub limit: Option<usize>,
}

/// What a listing chose: how many hosts there were, how many the filter took, and their names
/// when there is a filter (for their findings).
#[derive(Debug, Default)]
struct Chosen {
    total: usize,
    matched: usize,
    taken: Option<HashSet<String>>,
}

impl Listing {
    fn order(&self, a: &HostReport, b: &HostReport) -> std::cmp::Ordering {
        let order = host_order(a, b, self.sort);
        if self.reverse { order.reverse() } else { order }
    }

    /// The hosts the listing asks for of `all`, in its order, holding at most twice the limit
    /// at a time.
    fn choose(
        &self,
        all: &mut dyn Iterator<Item = HostReport>,
        chosen: &mut Chosen,
    ) -> Vec<HostReport> {
        let mut kept = Vec::new();
        let cut = |kept: &mut Vec<HostReport>, limit: usize| {
            if kept.len() > limit {
                kept.select_nth_unstable_by(limit, |a, b| self.order(a, b));
                kept.truncate(limit);
            }
        };
        let filtering = !self.filter.is_empty();
        for host in all {
            chosen.total += 1;
            if !self.filter.matches_host(&host) {
                continue;
            }
            chosen.matched += 1;
            if filtering {
                chosen.taken.get_or_insert_default().insert(host.host.clone());
            }
            kept.push(host);
            if let Some(limit) = self.limit
                && kept.len() >= 2 * limit.max(1)
            {
                cut(&mut kept, limit);
            }
        }
        if let Some(limit) = self.limit {
            cut(&mut kept, limit);
        }
        kept.sort_by(|a, b| self.order(a, b));
        kept
    }
}

/// Stats tables the workers record into, one each; more workers than this share them.
const MAX_SHARDS: usize = 64;

/// One worker's stats, recorded into a chunk at a time; a snapshot takes them over.
pub type Shard = Arc<Mutex<Gathered>>;

/// The longest a worker keeps what it gathered before merging it into the view itself, read
/// or not: what a shard holds stays a second's worth.
const HAND_OVER_EVERY: Duration = Duration::from_secs(1);

/// Lines, and findings, a worker gathers at most before handing them over: a shard stays
/// small (a second of a fast reader touches every host, and a shard's table would grow to
/// the view's size; each finding keeps its evidence line).
const HAND_OVER_LINES: u64 = 64 * 1024;
const HAND_OVER_FINDINGS: usize = 1024;

/// What one worker gathered since it last handed it over.
#[derive(Debug)]
pub struct Gathered {
    table: EgressStats,
    since: Instant,
}

impl Gathered {
    fn new(config: StatsConfig) -> Gathered {
        Gathered { table: EgressStats::new(config), since: Instant::now() }
    }

    /// What was gathered, leaving an empty table.
    fn take(&mut self) -> EgressStats {
        self.since = Instant::now();
        let config = self.table.config();
        std::mem::replace(&mut self.table, EgressStats::new(config))
    }
}

/// The shared live state.
#[derive(Debug)]
pub struct Live {
    config: StatsConfig,
    /// Everything the shards gathered, as of the last snapshot.
    stats: Mutex<EgressStats>,
    shards: Mutex<Vec<Shard>>,
    recent: Mutex<VecDeque<Arc<TailRecord>>>,
    sources: Mutex<BTreeMap<String, SourceProgress>>,
    sources_unlisted: AtomicU64,
    /// Per host, the upstream addresses its requests went to.
    upstreams: Mutex<HashMap<String, TopK, RandomState>>,
    upstreams_unkept: AtomicU64,
    /// The next tail record's `seq`, taken under the `recent` lock.
    next_seq: AtomicU64,
    tail: broadcast::Sender<Arc<TailRecord>>,
    pub readiness: Readiness,
}

impl Live {
    pub fn new(config: StatsConfig) -> Live {
        let (tail, _) = broadcast::channel(TAIL_CHANNEL);
        Live {
            config,
            stats: Mutex::new(EgressStats::new(config)),
            shards: Mutex::default(),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_KEEP)),
            sources: Mutex::default(),
            sources_unlisted: AtomicU64::new(0),
            upstreams: Mutex::default(),
            upstreams_unkept: AtomicU64::new(0),
            next_seq: AtomicU64::new(crate::ingest::now_ns().max(0) as u64),
            tail,
            readiness: Readiness::default(),
        }
    }

    /// A stats table of its own for a worker, to record its chunks into (past
    /// [`MAX_SHARDS`], one shared with others).
    pub fn shard(&self) -> Shard {
        let mut shards = lock(&self.shards);
        if shards.len() >= MAX_SHARDS
            && let Some(least_shared) = shards.iter().min_by_key(|s| Arc::strong_count(s))
        {
            return least_shared.clone();
        }
        let shard = Arc::new(Mutex::new(Gathered::new(self.config)));
        shards.push(shard.clone());
        shard
    }

    /// A worker's collector for one chunk from `source` (a pod or a file), recording into
    /// the worker's `shard` (locked until the chunk is flushed); `workloads` name the tail's
    /// sources.
    pub fn chunk<'l>(
        &'l self,
        shard: &'l Mutex<Gathered>,
        source: &'l str,
        workloads: Option<&'l Workloads>,
    ) -> LiveChunk<'l> {
        LiveChunk {
            live: self,
            source,
            workloads,
            shard: lock(shard),
            upstreams: HashMap::default(),
            key: String::new(),
            tail: VecDeque::new(),
            lines: 0,
            records: 0,
            newest_ns: None,
        }
    }

    /// The stats over `window` and everything else, with the collector's own `counts`.
    pub fn snapshot(&self, window: Window, counts: SelfCounts) -> Snapshot {
        self.snapshot_with(window, counts, None, &Listing::default())
    }

    /// [`Self::snapshot`], with a closer look at `host`.
    pub fn snapshot_with(
        &self,
        window: Window,
        counts: SelfCounts,
        host: Option<&str>,
        listing: &Listing,
    ) -> Snapshot {
        let shards = lock(&self.shards).clone();
        // Each shard is locked for the swap only (its worker records into the empty table
        // meanwhile), and never while the view's table is: a worker handing its shard over
        // holds the shard and then takes the table.
        let gathered: Vec<EgressStats> = shards.iter().map(|shard| lock(shard).take()).collect();
        let mut table = lock(&self.stats);
        for gathered in &gathered {
            table.merge(gathered);
        }
        drop(gathered);
        let mut chosen = Chosen::default();
        let mut stats = table.report_with(window, None, |all| listing.choose(all, &mut chosen));
        if let Some(taken) = &chosen.taken {
            stats.findings.retain(|finding| taken.contains(&finding.host));
        }
        let (hosts_total, hosts_matched) = (chosen.total, chosen.matched);
        let mut detail = host.and_then(|h| table.host_detail(h, window, None));
        if let Some(detail) = &mut detail
            && let Some(top) = lock(&self.upstreams).get(&detail.host)
        {
            let entry = |(value, count): (&str, u64)| TopEntry { value: value.to_owned(), count };
            detail.upstreams = top.top(UPSTREAMS_PER_HOST).into_iter().map(entry).collect();
        }
        let sources = lock(&self.sources).values().cloned().collect();
        let collector = SelfCounts {
            sources_unlisted: self.sources_unlisted.load(Ordering::Relaxed),
            ..counts
        };
        Snapshot {
            ready: self.readiness.ready(),
            taken_at: format_rfc3339_ms(crate::ingest::now_ns()),
            stats,
            sources,
            hosts_total,
            hosts_matched,
            collector,
            detail,
        }
    }

    /// The recent records, oldest first.
    pub fn recent(&self) -> Vec<Arc<TailRecord>> {
        lock(&self.recent).iter().cloned().collect()
    }

    /// Every record from now on (a sample past [`TAIL_PER_CHUNK`] a chunk).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<TailRecord>> {
        self.tail.subscribe()
    }
}

/// A lock whose holder panicked still guards counts that are each whole.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One chunk's share of the live view: its stats go straight into the worker's shard; the
/// rest is handed over by [`LiveChunk::flush`].
#[derive(Debug)]
pub struct LiveChunk<'l> {
    live: &'l Live,
    source: &'l str,
    workloads: Option<&'l Workloads>,
    shard: std::sync::MutexGuard<'l, Gathered>,
    /// Requests per host and upstream address (`host␟upstream`).
    upstreams: HashMap<Box<str>, u64, RandomState>,
    /// Scratch for those keys.
    key: String,
    /// The chunk's last records (a ring whose slots are reused).
    tail: VecDeque<TailRecord>,
    lines: u64,
    records: u64,
    newest_ns: Option<i64>,
}

impl LiveChunk<'_> {
    /// A record parsed by a sink that notes findings itself (the batch sink: its findings
    /// come in [`Self::flush_with`]); `noted` says whether this one was a finding's evidence.
    pub fn parsed(&mut self, entry: &Entry<'_>, raw: &[u8], ctx: &LineContext<'_>, noted: bool) {
        self.lines += 1;
        self.records += 1;
        let ts = ctx.record_ts(entry);
        self.newest_ns = Some(self.newest_ns.map_or(ts, |n| n.max(ts)));
        self.shard.table.record(entry, ts);
        if !noted && let Some(evidence) = findings::plaintext_upstream(entry, ctx, raw) {
            self.shard.table.plaintext.note(evidence, ctx.origin);
        }
        if let (Some(host), Some(upstream)) = (entry.host(), entry.upstream_host.as_deref()) {
            self.key.clear();
            self.key.push_str(host);
            self.key.push(KEY_SEPARATOR);
            self.key.push_str(upstream);
            match self.upstreams.get_mut(self.key.as_str()) {
                Some(n) => *n += 1,
                None => {
                    self.upstreams.insert(self.key.as_str().into(), 1);
                }
            }
        }
        let mut slot = match self.tail.len() {
            TAIL_PER_CHUNK => self.tail.pop_front().unwrap_or_default(),
            _ => TailRecord::default(),
        };
        slot.fill(entry, ctx);
        self.tail.push_back(slot);
    }

    /// A ztunnel connection parsed by a sink that notes findings itself.
    pub fn parsed_ztunnel(&mut self, conn: &Connection<'_>) {
        self.lines += 1;
        self.shard.table.record_ztunnel(conn);
    }

    /// [`Self::flush`], with the chunk's findings noted by the sink that fed it.
    pub fn flush_with(&mut self, noted: &Findings) {
        self.shard.table.findings.merge(noted);
        self.flush();
    }

    /// Hands the chunk's upstreams, last records and progress over, and what the shard
    /// gathered when it has kept it for [`HAND_OVER_EVERY`] or holds [`HAND_OVER_LINES`] or
    /// [`HAND_OVER_FINDINGS`].
    pub fn flush(&mut self) {
        let parsed_ns = crate::ingest::now_ns();
        if self.shard.since.elapsed() >= HAND_OVER_EVERY
            || self.shard.table.lines >= HAND_OVER_LINES
            || self.shard.table.findings.len() + self.shard.table.plaintext.len()
                >= HAND_OVER_FINDINGS
        {
            let gathered = self.shard.take();
            lock(&self.live.stats).merge(&gathered);
        }
        if !self.upstreams.is_empty() {
            let mut upstreams = lock(&self.live.upstreams);
            for (key, n) in self.upstreams.drain() {
                let Some((host, upstream)) = key.split_once(KEY_SEPARATOR) else { continue };
                if !upstreams.contains_key(host) {
                    if upstreams.len() >= MAX_UPSTREAM_HOSTS {
                        self.live.upstreams_unkept.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    upstreams.insert(host.to_owned(), TopK::new(UPSTREAMS_PER_HOST));
                }
                let Some(top) = upstreams.get_mut(host) else { continue };
                top.add(upstream, n);
            }
        }
        let workloads = self.workloads;
        let finished: Vec<TailRecord> = self.tail.drain(..).map(|r| r.finish(workloads)).collect();
        let mut records = Vec::with_capacity(finished.len());
        if !finished.is_empty() {
            // Numbered under the lock, so `recent` holds them in `seq` order.
            let mut recent = lock(&self.live.recent);
            let first = self.live.next_seq.fetch_add(finished.len() as u64, Ordering::Relaxed);
            for (seq, mut record) in (first..).zip(finished) {
                record.seq = seq;
                let record = Arc::new(record);
                if recent.len() == RECENT_KEEP {
                    recent.pop_front();
                }
                recent.push_back(record.clone());
                records.push(record);
            }
        }
        if self.live.tail.receiver_count() > 0 {
            for record in records {
                // No subscriber left between the count and now is no loss.
                let _ = self.live.tail.send(record);
            }
        }
        let mut sources = lock(&self.live.sources);
        if !sources.contains_key(self.source) {
            if sources.len() >= MAX_SOURCES {
                self.live.sources_unlisted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let source = self.source.to_owned();
            sources.insert(source.clone(), SourceProgress { source, ..SourceProgress::default() });
        }
        let Some(progress) = sources.get_mut(self.source) else { return };
        progress.lines += std::mem::take(&mut self.lines);
        progress.records += std::mem::take(&mut self.records);
        if let Some(newest) = self.newest_ns.take()
            && progress.newest_ns.is_none_or(|n| newest > n)
        {
            progress.newest_ns = Some(newest);
            progress.last_record = Some(format_rfc3339_ms(newest));
            progress.lag_seconds = Some(parsed_ns.saturating_sub(newest).max(0) as f64 / 1e9);
        }
    }
}

impl LineSink for LiveChunk<'_> {
    fn projection(&self) -> Projection {
        Projection::All
    }

    fn record(&mut self, entry: &Entry<'_>, raw: &[u8], ctx: &LineContext<'_>) {
        let evidence = findings::from_entry(entry, ctx, raw);
        let noted = evidence.is_some();
        if let Some(evidence) = evidence {
            self.shard.table.findings.note(evidence, ctx.origin);
        }
        self.parsed(entry, raw, ctx, noted);
    }

    fn reject(&mut self, reason: RejectReason, raw: &[u8], raw_len: u64, ctx: &LineContext<'_>) {
        self.lines += 1;
        LineSink::reject(&mut self.shard.table, reason, raw, raw_len, ctx);
    }

    fn ztunnel(&mut self, conn: &Connection<'_>, raw: &[u8], raw_len: u64, ctx: &LineContext<'_>) {
        self.lines += 1;
        LineSink::ztunnel(&mut self.shard.table, conn, raw, raw_len, ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_hands_over_what_it_kept_for_a_second_even_unread() {
        let live = Live::new(StatsConfig::default());
        let shard = live.shard();
        let entry = Entry { authority: Some("a.example".into()), ..Entry::default() };
        let ctx = LineContext::default();
        let parse_one = || {
            let mut chunk = live.chunk(&shard, "test", None);
            chunk.parsed(&entry, b"{}", &ctx, false);
            chunk.flush();
        };
        parse_one();
        assert_eq!(lock(&live.stats).records, 0, "kept by the worker for now");
        std::thread::sleep(HAND_OVER_EVERY);
        parse_one();
        assert_eq!(lock(&live.stats).records, 2, "handed over by the worker");
        assert_eq!(lock(&shard).table.records, 0);
        parse_one();
        let snapshot = live.snapshot(Window::All, SelfCounts::default());
        assert_eq!(snapshot.stats.records, 3, "the rest taken by the snapshot");
    }

    /// A worker hands its shard over (holding the shard, taking the view's table) while
    /// snapshots are taken back to back (each taking the table and the shards): neither may
    /// wait for the other. It did once, and the collector stopped.
    #[test]
    fn snapshots_never_wait_on_a_worker_handing_its_shard_over() {
        const CHUNK: Duration = Duration::from_millis(100);
        let live = Arc::new(Live::new(StatsConfig::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn({
            let live = live.clone();
            move || {
                let shard = live.shard();
                let entry = Entry { authority: Some("a.example".into()), ..Entry::default() };
                let ctx = LineContext::default();
                let until = Instant::now() + HAND_OVER_EVERY * 4;
                let mut parsed = 0u64;
                while Instant::now() < until {
                    let mut chunk = live.chunk(&shard, "test", None);
                    chunk.parsed(&entry, b"{}", &ctx, false);
                    // A chunk holds its shard while it is parsed.
                    std::thread::sleep(CHUNK);
                    chunk.flush();
                    parsed += 1;
                }
                done.send(parsed).unwrap();
            }
        });
        let reader = std::thread::spawn({
            let (live, stop) = (live.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    live.snapshot(Window::All, SelfCounts::default());
                    // The next snapshot comes during the chunk at whose end the worker hands
                    // over (a second after this snapshot took the shard, at a chunk's end).
                    std::thread::sleep(HAND_OVER_EVERY - CHUNK / 2);
                }
            }
        });
        let parsed = finished.recv_timeout(HAND_OVER_EVERY * 20);
        stop.store(true, Ordering::Relaxed);
        let parsed = parsed.expect("the worker finished: no lock waited on another for ever");
        reader.join().unwrap();
        assert_eq!(live.snapshot(Window::All, SelfCounts::default()).stats.records, parsed);
    }
}
