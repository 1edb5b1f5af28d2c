//! One-shot runs over finite inputs: read lines, parse, and feed a [`LineSink`].
//!
//! [`stats`] splits the input into blocks of whole lines and parses them on worker threads,
//! each with its own [`EgressStats`], merged at the end (every part of the stats merges).
//! [`batches`] runs on the calling thread and hands out Arrow batches in input order.
//! Reading, framing and CRI joining stay sequential; parsing is what costs.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use crossbeam_channel::bounded;

use crate::batch::{AccessLogBatcher, LineContext, RejectBatcher, ZtunnelBatcher, findings_batch};
use crate::export::ChunkTelemetry;
use crate::findings::{self, Findings};
use crate::live::LiveChunk;
use crate::netrange::InternalRanges;
use crate::parse::ztunnel::{self, Connection};
use crate::parse::{
    Entry, LogFormat, Projection, RejectReason, frame, parse_message, sniff_encoding,
};
use crate::source::Input;
use crate::source::lines::{Chunk, DEFAULT_MAX_LINE, RawLine, read_chunks};
use crate::stats::{EgressStats, StatsConfig};

/// An input that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {name}")]
pub struct ReadError {
    pub name: String,
    #[source]
    pub source: std::io::Error,
}

/// Settings of a one-shot run.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Longer lines are rejected as `too_long`.
    pub max_line: usize,
    /// Parsing threads for [`stats`].
    pub workers: usize,
    /// Bytes of whole lines handed to a worker at a time (a chunk).
    pub block_bytes: usize,
    pub stats: StatsConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_line: DEFAULT_MAX_LINE,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            block_bytes: 1 << 20,
            stats: StatsConfig::default(),
        }
    }
}

/// Receives each line's outcome.
pub trait LineSink {
    /// The fields this sink reads from entries.
    fn projection(&self) -> Projection;
    /// A record, with its line as read (`raw`).
    fn record(&mut self, entry: &Entry<'_>, raw: &[u8], ctx: &LineContext<'_>);
    fn reject(&mut self, reason: RejectReason, raw: &[u8], raw_len: u64, ctx: &LineContext<'_>);

    /// A ztunnel connection line.
    fn ztunnel(&mut self, conn: &Connection<'_>, raw: &[u8], raw_len: u64, ctx: &LineContext<'_>);
}

/// Frames, parses and dispatches one logical line; `base` says where it came from.
pub fn process_line(line: RawLine<'_>, base: &LineContext<'_>, sink: &mut impl LineSink) {
    // An overlong line's kept head still holds its prefixes, and with them its time.
    let framed = frame(line.bytes);
    let ctx = LineContext {
        line: line.line_no,
        prefix_ts_ns: framed.ts_ns,
        pod: framed.pod.or(base.pod),
        ..*base
    };
    // A line that is not read cannot be redacted: with redaction on, its text is withheld.
    let rejected = if ctx.redact.is_on() { crate::redact::WITHHELD } else { line.bytes };
    if line.too_long {
        sink.reject(RejectReason::TooLong, rejected, line.len, &ctx);
        return;
    }
    if ztunnel::detect(framed.msg) {
        match std::str::from_utf8(framed.msg).map(ztunnel::parse) {
            Ok(Ok(conn)) => sink.ztunnel(&conn, line.bytes, line.len, &ctx),
            Ok(Err(_)) => sink.reject(RejectReason::BadZtunnel, rejected, line.len, &ctx),
            Err(_) => sink.reject(RejectReason::InvalidUtf8, rejected, line.len, &ctx),
        }
        return;
    }
    match parse_message(framed.msg, sink.projection()) {
        Ok(entry) if ctx.encoding.is_some_and(|e| entry.format != Some(e)) => {
            sink.reject(RejectReason::MixedEncoding, rejected, line.len, &ctx);
        }
        Ok(entry) if ctx.redact.is_on() => {
            let (entry, shown) = ctx.redact.entry(entry, line.bytes);
            sink.record(&entry, &shown, &ctx);
        }
        Ok(entry) => sink.record(&entry, line.bytes, &ctx),
        Err(reason) => sink.reject(reason, rejected, line.len, &ctx),
    }
}

/// A stream's access-log encoding is that of its first access-log entry. A waypoint writes
/// one encoding; a second one means a second provider logging every request again.
#[derive(Debug, Default, Clone, Copy)]
pub struct EncodingLock(Option<LogFormat>);

impl EncodingLock {
    pub fn observe(&mut self, line: &RawLine<'_>) {
        if self.0.is_none() && !line.too_long {
            self.0 = sniff_encoding(frame(line.bytes).msg);
        }
    }

    /// Observes a chunk's lines while the encoding is still undecided (its first chunks).
    pub fn observe_chunk(&mut self, chunk: &Chunk, max_line: usize) {
        if self.0.is_none() {
            chunk.lines(max_line, |line| self.observe(&line));
        }
    }

    pub fn encoding(&self) -> Option<LogFormat> {
        self.0
    }

    /// The lock of a stream resumed from a checkpoint that names its encoding: the
    /// encoding its first entry decided, not the first after the checkpoint (which may be a
    /// second provider's). An unknown name leaves it undecided.
    pub fn resumed(encoding: Option<&str>) -> Self {
        EncodingLock(encoding.and_then(LogFormat::from_name))
    }
}

/// Wall-clock time, for lines that carry no time of their own.
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl LineSink for EgressStats {
    fn projection(&self) -> Projection {
        Projection::Stats
    }

    fn record(&mut self, entry: &Entry<'_>, raw: &[u8], ctx: &LineContext<'_>) {
        EgressStats::record(self, entry, ctx.record_ts(entry));
        if let Some(evidence) = findings::from_entry(entry, ctx, raw) {
            self.findings.note(evidence, ctx.origin);
        } else if let Some(evidence) = findings::plaintext_upstream(entry, ctx, raw) {
            self.plaintext.note(evidence, ctx.origin);
        }
    }

    fn reject(&mut self, reason: RejectReason, _raw: &[u8], _len: u64, _ctx: &LineContext<'_>) {
        self.record_reject(reason);
    }

    fn ztunnel(&mut self, conn: &Connection<'_>, raw: &[u8], _: u64, ctx: &LineContext<'_>) {
        self.record_ztunnel(conn);
        if let Some(evidence) = findings::from_connection(conn, &self.internal(), ctx, raw) {
            self.findings.note(evidence, ctx.origin);
        }
    }
}

/// A chunk of one input and what a worker needs to know about where it came from.
struct Work {
    origin: Arc<str>,
    chunk: Chunk,
    ingest_ts_ns: i64,
    encoding: Option<LogFormat>,
}

impl Work {
    fn process(&self, max_line: usize, sink: &mut impl LineSink) {
        let ctx = LineContext {
            origin: &self.origin,
            ingest_ts_ns: self.ingest_ts_ns,
            encoding: self.encoding,
            ..LineContext::default()
        };
        self.chunk.lines(max_line, |line| process_line(line, &ctx, sink));
    }
}

/// Per-host stats of all `inputs`, parsed on `config.workers` threads.
pub fn stats(inputs: &[Input], config: &IngestConfig) -> Result<EgressStats, ReadError> {
    let workers = config.workers.max(1);
    // Two chunks in flight per worker keep them busy; more would only hold memory.
    let (tx, rx) = bounded::<Work>(workers * 2);
    // Buffers of processed chunks go back to the reader; a full pool just frees one.
    let (recycle_tx, recycle_rx) = bounded::<Vec<u8>>(workers * 2 + 1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                let recycle_tx = recycle_tx.clone();
                scope.spawn(move || {
                    let mut stats = EgressStats::new(config.stats);
                    for work in rx {
                        work.process(config.max_line, &mut stats);
                        if let Some(buf) = work.chunk.into_buffer() {
                            let _ = recycle_tx.try_send(buf);
                        }
                    }
                    stats
                })
            })
            .collect();
        drop(rx);
        drop(recycle_tx);
        let read = read_work(
            inputs,
            config,
            || recycle_rx.try_recv().ok(),
            |work| {
                // Workers only stop when the channel closes, so a send cannot fail here.
                let _ = tx.send(work);
            },
        );
        drop(tx);
        // Merge into the first worker's table rather than a fresh one: one copy less in memory.
        let mut parts = handles.into_iter().map(|h| h.join().expect("a stats worker panicked"));
        let mut total = parts.next().unwrap_or_else(|| EgressStats::new(config.stats));
        for part in parts {
            total.merge(&part);
        }
        read.map(|()| total)
    })
}

/// Reads every input in chunks, deciding each input's encoding from its first entry.
fn read_work(
    inputs: &[Input],
    config: &IngestConfig,
    mut recycled: impl FnMut() -> Option<Vec<u8>>,
    mut send: impl FnMut(Work),
) -> Result<(), ReadError> {
    for input in inputs {
        let name = input.name();
        let origin: Arc<str> = name.as_str().into();
        let reader = input.open().map_err(|source| ReadError { name: name.clone(), source })?;
        let mut lock = EncodingLock::default();
        read_chunks(reader, config.block_bytes, config.max_line, &mut recycled, |chunk| {
            lock.observe_chunk(&chunk, config.max_line);
            let ingest_ts_ns = now_ns();
            send(Work { origin: origin.clone(), chunk, ingest_ts_ns, encoding: lock.encoding() });
        })
        .map_err(|source| ReadError { name: name.clone(), source })?;
    }
    Ok(())
}

/// Builds `access_log`, `rejects` and `ztunnel_conn` batches in input order on the calling
/// thread, and notes the findings their lines show (handed over as one `findings` batch on
/// [`BatchSink::flush`]).
#[derive(Debug)]
pub struct BatchSink<'t, F> {
    access_log: AccessLogBatcher,
    rejects: RejectBatcher,
    ztunnel: ZtunnelBatcher,
    findings: Findings,
    internal: InternalRanges,
    /// The chunk's metrics and spans, when they are exported.
    telemetry: Option<ChunkTelemetry<'t>>,
    /// The chunk's share of the live view, when the status API serves one.
    live: Option<LiveChunk<'t>>,
    out: F,
}

impl<'t, F: FnMut(TableBatch)> BatchSink<'t, F> {
    /// Hands batches of at most `batch_rows` rows to `out`; `internal` is what counts as
    /// inside the cluster, for bypass findings.
    pub fn new(batch_rows: usize, internal: InternalRanges, out: F) -> Self {
        BatchSink {
            access_log: AccessLogBatcher::new(batch_rows),
            rejects: RejectBatcher::new(batch_rows),
            ztunnel: ZtunnelBatcher::new(batch_rows),
            findings: Findings::default(),
            internal,
            telemetry: None,
            live: None,
            out,
        }
    }

    /// Also gathers what the lines give for export, recorded on [`BatchSink::flush`].
    pub fn with_telemetry(mut self, telemetry: Option<ChunkTelemetry<'t>>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Also feeds the live view.
    pub fn with_live(mut self, live: Option<LiveChunk<'t>>) -> Self {
        self.live = live;
        self
    }

    /// Hands over the partial batches too, and the findings noted since the last flush.
    pub fn flush(&mut self) {
        if let Some(telemetry) = &mut self.telemetry {
            telemetry.flush(&self.findings);
        }
        if let Some(live) = &mut self.live {
            live.flush_with(&self.findings);
        }
        if let Some(batch) = findings_batch(&self.findings) {
            (self.out)(TableBatch::Findings(batch));
            self.findings = Findings::default();
        }
        if !self.access_log.is_empty() {
            let batch = self.access_log.finish();
            (self.out)(TableBatch::AccessLog(batch));
        }
        if !self.rejects.is_empty() {
            let batch = self.rejects.finish();
            (self.out)(TableBatch::Rejects(batch));
        }
        if !self.ztunnel.is_empty() {
            let batch = self.ztunnel.finish();
            (self.out)(TableBatch::Ztunnel(batch));
        }
    }
}

/// A finished batch and which table it belongs to.
#[derive(Debug)]
pub enum TableBatch {
    AccessLog(RecordBatch),
    Rejects(RecordBatch),
    Ztunnel(RecordBatch),
    Findings(RecordBatch),
    Probes(RecordBatch),
    MeshHosts(RecordBatch),
}

impl<F: FnMut(TableBatch)> LineSink for BatchSink<'_, F> {
    fn projection(&self) -> Projection {
        Projection::All
    }

    fn record(&mut self, entry: &Entry<'_>, raw: &[u8], ctx: &LineContext<'_>) {
        let evidence = findings::from_entry(entry, ctx, raw);
        if let Some(telemetry) = &mut self.telemetry {
            telemetry.record(entry, ctx, evidence.is_some());
        }
        if let Some(live) = &mut self.live {
            live.parsed(entry, raw, ctx, evidence.is_some());
        }
        if let Some(evidence) = evidence {
            self.findings.note(evidence, ctx.origin);
        }
        if let Some(batch) = self.access_log.push(entry, ctx) {
            (self.out)(TableBatch::AccessLog(batch));
        }
    }

    fn reject(&mut self, reason: RejectReason, raw: &[u8], raw_len: u64, ctx: &LineContext<'_>) {
        if let Some(telemetry) = &mut self.telemetry {
            telemetry.reject(reason);
        }
        if let Some(live) = &mut self.live {
            live.reject(reason, raw, raw_len, ctx);
        }
        if let Some(batch) = self.rejects.push(reason, raw, raw_len, ctx) {
            (self.out)(TableBatch::Rejects(batch));
        }
    }

    fn ztunnel(&mut self, conn: &Connection<'_>, raw: &[u8], _: u64, ctx: &LineContext<'_>) {
        if let Some(telemetry) = &mut self.telemetry {
            telemetry.ztunnel(conn);
        }
        if let Some(live) = &mut self.live {
            live.parsed_ztunnel(conn);
        }
        if let Some(evidence) = findings::from_connection(conn, &self.internal, ctx, raw) {
            self.findings.note(evidence, ctx.origin);
        }
        if let Some(batch) = self.ztunnel.push(conn, ctx) {
            (self.out)(TableBatch::Ztunnel(batch));
        }
    }
}

/// Parses `input` into batches of at most `batch_rows` rows, calling `out` for each.
pub fn batches(
    input: &Input,
    config: &IngestConfig,
    batch_rows: usize,
    out: impl FnMut(TableBatch),
) -> Result<(), ReadError> {
    let name = input.name();
    let reader = input.open().map_err(|source| ReadError { name: name.clone(), source })?;
    let mut sink = BatchSink::new(batch_rows, config.stats.internal, out);
    let mut ctx = LineContext { origin: &name, ingest_ts_ns: now_ns(), ..LineContext::default() };
    let mut lock = EncodingLock::default();
    // Processed in place, so one buffer is reused throughout.
    let spare: Cell<Option<Vec<u8>>> = Cell::new(None);
    read_chunks(
        reader,
        config.block_bytes,
        config.max_line,
        || spare.take(),
        |chunk| {
            ctx.ingest_ts_ns = now_ns();
            chunk.lines(config.max_line, |line| {
                lock.observe(&line);
                ctx.encoding = lock.encoding();
                process_line(line, &ctx, &mut sink);
            });
            spare.set(chunk.into_buffer());
        },
    )
    .map_err(|source| ReadError { name: name.clone(), source })?;
    sink.flush();
    Ok(())
}
