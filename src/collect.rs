//! `collect`: log lines into the store, committed in input order together with the position
//! they reach, and resumed from the store's checkpoint, so no line is stored twice or lost.
//!
//! Threads: a reader cuts the input into chunks of whole lines (following a file like
//! `tail -F`, or reading to the end with `once`); `workers` parse chunks into Arrow batches;
//! the calling thread puts them back in input order and writes them into the pending commit,
//! which is made every `commit_rows` rows, once rows have waited `commit_every`, when the
//! source file changes (rotation, truncation) and at the end. Every channel is bounded, so a
//! slow disk slows the reading and memory stays flat.
//!
//! Stopping (`Control::stop`, set by SIGINT/SIGTERM) hands over every whole line read, commits
//! and returns; an unfinished last line stays in the file for the next run.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, bounded};

use crate::batch::LineContext;
use crate::ingest::{BatchSink, EncodingLock, TableBatch, now_ns, process_line};
use crate::parse::LogFormat;
use crate::source::Input;
use crate::source::lines::{Chunk, ChunkReader};
use crate::store::{ACCESS_LOG, Checkpoint, PendingCommit, REJECTS, Store, StoreError};

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
    /// Remove hour partitions older than this, after commits (at most once a minute).
    pub retain: Option<Duration>,
    /// Merge the small files of hours that ended more than an hour ago, at most this often.
    pub compact_every: Option<Duration>,
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
            retain: None,
            compact_every: None,
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
    pub commits: usize,
    /// Hour partitions removed by retention.
    pub expired: usize,
    /// Files merged away by compaction.
    pub compacted: usize,
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One file from one open to its rotation or truncation (or stdin): what the offsets of its
/// chunks refer to.
#[derive(Debug)]
struct Source {
    /// `file:<device>:<inode>`, or `stdin:<start ns>` (never resumed).
    id: String,
    /// The path it was opened by, for people and for finding it after a rotation.
    path: Option<String>,
    /// Where reading started.
    base: u64,
}

/// A chunk on its way to a worker.
struct Work {
    seq: u64,
    chunk: Chunk,
    encoding: Option<LogFormat>,
    source: Arc<Source>,
}

/// One chunk parsed by a worker: its batches, and where its source stands after it.
struct Parsed {
    seq: u64,
    batches: Vec<TableBatch>,
    source: Arc<Source>,
    end_offset: u64,
}

fn file_id(meta: &fs::Metadata) -> String {
    format!("file:{}:{}", meta.dev(), meta.ino())
}

fn is_gzip(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    let gzip = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0))?;
    Ok(gzip)
}

/// Where reading a path starts: a rotated file to finish first, then the path's own offset.
#[derive(Debug, Default)]
struct Start {
    rotated: Option<(PathBuf, u64)>,
    offset: u64,
    warning: Option<String>,
}

/// Looks up where `path` was left: its own checkpoint, or, when the store's newest commit from
/// this path came from another file, that file under a rotated name (`PATH.1`, `PATH.<ts>`).
fn plan_start(path: &Path, store: &Store) -> Result<Start, CollectError> {
    let read_err = |source| CollectError::Read { name: path.display().to_string(), source };
    let id = match fs::metadata(path) {
        Ok(meta) => Some(file_id(&meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(e)),
    };
    if let Some(id) = &id
        && let Some(checkpoint) = store.checkpoint(id)?
    {
        return Ok(Start { offset: checkpoint.offset, ..Start::default() });
    }
    let Some(last) = store.checkpoint_of_path(&path.display().to_string())? else {
        return Ok(Start::default());
    };
    if !last.source.starts_with("file:") {
        return Ok(Start::default());
    }
    match find_rotated(path, &last.source).map_err(read_err)? {
        Some(rotated) => Ok(Start { rotated: Some((rotated, last.offset)), ..Start::default() }),
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

/// A file next to `path` named `<name>.<anything>` with the identity `id`.
fn find_rotated(path: &Path, id: &str) -> io::Result<Option<PathBuf>> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(None);
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let sibling = entry.file_name();
        if !sibling.to_str().is_some_and(|s| s.starts_with(&prefix)) {
            continue;
        }
        let meta = entry.metadata()?;
        if meta.is_file() && file_id(&meta) == id {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// Reads `input` into `store` from where the store says it was left, until its end (`once`,
/// stdin) or until `control.stop`.
pub fn collect(
    input: &Input,
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
) -> Result<CollectSummary, CollectError> {
    let name = input.name();
    let mut summary = CollectSummary::default();
    let start = match input {
        Input::Path(path) => plan_start(path, store)?,
        Input::Stdin | Input::Memory { .. } => Start::default(),
    };
    summary.resumed_at = start.offset;
    summary.finished_rotated = start.rotated.as_ref().map(|(path, _)| path.clone());
    summary.warnings.extend(start.warning.clone());
    let workers = config.workers.max(1);
    // Bounded at both ends: the reader waits for workers, workers wait for the committer.
    let (work_tx, work_rx) = bounded::<Work>(workers * 2);
    let (parsed_tx, parsed_rx) = bounded::<Parsed>(workers * 2);
    // Chunk buffers go back to the reader: fresh ones cost page faults and zeroing.
    let (spare_tx, spare_rx) = bounded::<Vec<u8>>(workers * 4);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let (work_rx, parsed_tx, spare_tx) =
                (work_rx.clone(), parsed_tx.clone(), spare_tx.clone());
            scope.spawn(move || parse_chunks(&work_rx, &parsed_tx, &spare_tx, config, control));
        }
        drop((work_rx, parsed_tx, spare_tx));
        let reader = scope.spawn(move || {
            let mut reader = Reader {
                config,
                control,
                work: work_tx,
                spare: spare_rx,
                seq: 0,
                closed: Cell::new(false),
            };
            let mut warnings = Vec::new();
            let read = reader.run(input, start, &mut warnings);
            (read, warnings)
        });
        let committed = commit_in_order(&parsed_rx, store, config, control, &mut summary);
        if committed.is_err() {
            // Stop the reader, even one waiting for its file to grow.
            control.stop.store(true, Ordering::Relaxed);
        }
        drop(parsed_rx);
        let (read, warnings) = reader.join().expect("the reader thread panicked");
        summary.warnings.extend(warnings);
        committed?;
        read.map_err(|source| match source {
            ReadFailure::Io(source) => CollectError::Read { name: name.clone(), source },
            ReadFailure::Gzip => CollectError::FollowGzip { name: name.clone() },
        })?;
        summary.bytes = control.bytes.load(Ordering::Relaxed);
        Ok(summary)
    })
}

fn parse_chunks(
    work: &crossbeam_channel::Receiver<Work>,
    parsed: &crossbeam_channel::Sender<Parsed>,
    spare: &crossbeam_channel::Sender<Vec<u8>>,
    config: &CollectConfig,
    control: &Control,
) {
    for Work { seq, chunk, encoding, source } in work {
        let mut batches = Vec::new();
        // Builders are sized for this chunk's lines (waypoint lines run near a kilobyte), not
        // for a whole batch: a worker makes one set per chunk.
        let expected = (chunk.len_bytes() / 1024).clamp(64, config.batch_rows);
        let mut sink = BatchSink::new(expected, |b| batches.push(b));
        let origin = source.path.as_deref().unwrap_or("stdin");
        let ctx =
            LineContext { origin, ingest_ts_ns: now_ns(), encoding, ..LineContext::default() };
        let mut lines = 0;
        chunk.lines(config.max_line, |line| {
            process_line(line, &ctx, &mut sink);
            lines += 1;
        });
        sink.flush();
        control.lines.fetch_add(lines, Ordering::Relaxed);
        let end_offset = source.base + chunk.end_offset();
        if let Some(buffer) = chunk.into_buffer() {
            // Full means enough are waiting; this one is freed.
            let _ = spare.try_send(buffer);
        }
        if parsed.send(Parsed { seq, batches, source, end_offset }).is_err() {
            return;
        }
    }
}

enum ReadFailure {
    Io(io::Error),
    Gzip,
}

impl From<io::Error> for ReadFailure {
    fn from(e: io::Error) -> Self {
        ReadFailure::Io(e)
    }
}

/// The reader thread: cuts inputs into chunks and numbers them for the committer.
struct Reader<'a> {
    config: &'a CollectConfig,
    control: &'a Control,
    work: crossbeam_channel::Sender<Work>,
    spare: crossbeam_channel::Receiver<Vec<u8>>,
    seq: u64,
    /// The workers are gone (the committer failed): stop reading.
    closed: Cell<bool>,
}

type Spare = Box<dyn FnMut() -> Option<Vec<u8>> + Send>;

/// A file (or stdin) being read: its source, chunk reader and encoding.
struct Open<R> {
    input: R,
    source: Arc<Source>,
    chunks: ChunkReader<Spare>,
    lock: EncodingLock,
}

impl<R: Read> Open<R> {
    /// Where the input stands: the source offset of the next byte to read.
    fn position(&self) -> u64 {
        self.source.base + self.chunks.bytes_read()
    }
}

impl Reader<'_> {
    fn open<R: Read>(&self, input: R, id: String, path: Option<String>, base: u64) -> Open<R> {
        let spare = self.spare.clone();
        let spare: Spare = Box::new(move || spare.try_recv().ok());
        Open {
            input,
            source: Arc::new(Source { id, path, base }),
            chunks: ChunkReader::new(self.config.chunk_bytes, self.config.max_line, spare),
            lock: EncodingLock::default(),
        }
    }

    fn stopping(&self) -> bool {
        self.closed.get() || self.control.stop.load(Ordering::Relaxed)
    }

    fn run(
        &mut self,
        input: &Input,
        start: Start,
        warnings: &mut Vec<String>,
    ) -> Result<(), ReadFailure> {
        match input {
            Input::Path(path) => {
                if let Some((rotated, offset)) = &start.rotated {
                    self.finish_rotated(rotated, path, *offset)?;
                }
                if self.config.once {
                    self.read_file_once(path, start.offset)
                } else {
                    self.follow(path, start.offset, warnings)
                }
            }
            Input::Stdin => self.read_stdin(),
            Input::Memory { name, .. } => {
                let id = format!("memory:{name}");
                let mut open = self.open(input.open()?, id, Some(name.clone()), 0);
                self.drain(&mut open, true)?;
                self.finish(open);
                Ok(())
            }
        }
    }

    /// Reads what `open` has now, handing over whole lines, until a stop if `stoppable`;
    /// returns the bytes read.
    fn drain<R: Read>(&mut self, open: &mut Open<R>, stoppable: bool) -> io::Result<u64> {
        let Open { input, source, chunks, lock } = open;
        let no_stop = AtomicBool::new(false);
        let stop = if stoppable { &self.control.stop } else { &no_stop };
        let mut input = Until { inner: input, closed: &self.closed, stop };
        let (work, seq, closed, control, max_line) =
            (&self.work, &mut self.seq, &self.closed, self.control, self.config.max_line);
        let before = chunks.bytes_read();
        chunks.read_available(&mut input, &mut |chunk| {
            send(work, seq, closed, chunk, lock, source, max_line);
        })?;
        let read = chunks.bytes_read() - before;
        control.bytes.fetch_add(read, Ordering::Relaxed);
        Ok(read)
    }

    /// Hands over what is left of a complete input, an unfinished last line included.
    fn finish<R: Read>(&mut self, open: Open<R>) {
        let Open { source, chunks, mut lock, .. } = open;
        let (work, seq, closed, max_line) =
            (&self.work, &mut self.seq, &self.closed, self.config.max_line);
        chunks.finish(&mut |chunk| send(work, seq, closed, chunk, &mut lock, &source, max_line));
    }

    fn open_file(&self, path: &Path, offset: u64) -> Result<Open<File>, ReadFailure> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        let offset = if meta.len() < offset { 0 } else { offset };
        if is_gzip(&mut file)? {
            return Err(ReadFailure::Gzip);
        }
        file.seek(SeekFrom::Start(offset))?;
        let path = Some(path.display().to_string());
        Ok(self.open(file, file_id(&meta), path, offset))
    }

    /// A file that was rotated away while no collector ran: read from the checkpoint to its
    /// end, under the name the collector knew it by.
    fn finish_rotated(
        &mut self,
        rotated: &Path,
        path: &Path,
        offset: u64,
    ) -> Result<(), ReadFailure> {
        let mut open = self.open_file(rotated, offset)?;
        open.source = Arc::new(Source {
            id: open.source.id.clone(),
            path: Some(path.display().to_string()),
            base: open.source.base,
        });
        self.drain(&mut open, true)?;
        if !self.stopping() {
            self.finish(open);
        }
        Ok(())
    }

    fn read_file_once(&mut self, path: &Path, offset: u64) -> Result<(), ReadFailure> {
        let mut file = File::open(path)?;
        if is_gzip(&mut file)? {
            // Compressed: no seeking, so skip the committed part by reading it.
            let mut reader = Input::Path(path.to_path_buf()).open()?;
            let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())?;
            let (reader, base) = if skipped < offset {
                (Input::Path(path.to_path_buf()).open()?, 0)
            } else {
                (reader, offset)
            };
            let id = file_id(&file.metadata()?);
            let mut open = self.open(reader, id, Some(path.display().to_string()), base);
            self.drain(&mut open, true)?;
            if !self.stopping() {
                self.finish(open);
            }
            return Ok(());
        }
        let mut open = self.open_file(path, offset)?;
        self.drain(&mut open, true)?;
        if !self.stopping() {
            self.finish(open);
        }
        Ok(())
    }

    /// `tail -F`: reads what is appended, starts over when the file is truncated, and when
    /// another file takes the path (rotation), finishes the old one and reads the new one from
    /// its start. A missing path is waited for.
    fn follow(
        &mut self,
        path: &Path,
        mut offset: u64,
        warnings: &mut Vec<String>,
    ) -> Result<(), ReadFailure> {
        let mut current: Option<Open<File>> = None;
        while !self.stopping() {
            let Some(open) = current.as_mut() else {
                match self.open_file(path, offset) {
                    Ok(open) => current = Some(open),
                    Err(ReadFailure::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                        self.sleep();
                    }
                    Err(e) => return Err(e),
                }
                offset = 0;
                continue;
            };
            if self.drain(open, true)? > 0 || self.stopping() {
                continue;
            }
            let position = open.position();
            if open.input.metadata()?.len() < position {
                // Truncated in place (copytruncate): what was beyond is gone; start over.
                warnings.push(format!(
                    "{} was truncated at byte {position}; reading it again from its start",
                    path.display()
                ));
                let mut old = current.take().expect("checked above");
                old.input.seek(SeekFrom::Start(0))?;
                let path = old.source.path.clone();
                let id = old.source.id.clone();
                let (file, lock) = (old.input.try_clone()?, std::mem::take(&mut old.lock));
                self.finish(old);
                let mut fresh = self.open(file, id, path, 0);
                fresh.lock = lock;
                current = Some(fresh);
                continue;
            }
            let replaced = match fs::metadata(path) {
                Ok(meta) => file_id(&meta) != open.source.id,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e.into()),
            };
            if replaced {
                // Rotated: take what the writer added before it moved on, then switch.
                self.drain(open, true)?;
                if self.stopping() {
                    continue;
                }
                let old = current.take().expect("checked above");
                self.finish(old);
                continue;
            }
            self.sleep();
        }
        Ok(())
    }

    /// Stdin, through a thread that owns the blocking reads, so a stop is seen even while no
    /// line comes. Stdin is never resumed, so on a stop whatever was read is handed over.
    fn read_stdin(&mut self) -> Result<(), ReadFailure> {
        let (tx, rx) = bounded::<io::Result<Vec<u8>>>(4);
        std::thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            loop {
                let mut block = vec![0u8; 256 * 1024];
                let read = match stdin.read(&mut block) {
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        Ok(block)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                if tx.send(read).is_err() {
                    return;
                }
            }
        });
        let piped = Piped { rx, pending: Vec::new(), at: 0, poll: self.config.poll, eof: false };
        let id = format!("stdin:{}", now_ns());
        let mut open = self.open(piped, id, None, 0);
        while !open.input.eof && !self.closed.get() {
            if self.control.stop.load(Ordering::Relaxed) {
                // Take what already came through the pipe, then stop waiting for more.
                open.input.poll = Duration::ZERO;
                self.drain(&mut open, false)?;
                break;
            }
            self.drain(&mut open, true)?;
        }
        self.finish(open);
        Ok(())
    }

    fn sleep(&self) {
        let until = Instant::now() + self.config.poll;
        while !self.stopping() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20).min(self.config.poll));
        }
    }
}

/// Hands a chunk to the workers, deciding the source's encoding from its first lines.
fn send(
    work: &crossbeam_channel::Sender<Work>,
    seq: &mut u64,
    closed: &Cell<bool>,
    chunk: Chunk,
    lock: &mut EncodingLock,
    source: &Arc<Source>,
    max_line: usize,
) {
    lock.observe_chunk(&chunk, max_line);
    let work_item = Work { seq: *seq, chunk, encoding: lock.encoding(), source: source.clone() };
    if work.send(work_item).is_err() {
        closed.set(true);
    }
    *seq += 1;
}

/// A reader that reports "nothing more for now" (0) once a stop is requested.
struct Until<'a, R> {
    inner: &'a mut R,
    closed: &'a Cell<bool>,
    stop: &'a AtomicBool,
}

impl<R: Read> Read for Until<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.closed.get() || self.stop.load(Ordering::Relaxed) {
            return Ok(0);
        }
        self.inner.read(buf)
    }
}

/// Stdin's blocks as they arrive: 0 after `poll` without any ("nothing for now"), or at the
/// end (`eof`).
struct Piped {
    rx: crossbeam_channel::Receiver<io::Result<Vec<u8>>>,
    pending: Vec<u8>,
    at: usize,
    poll: Duration,
    eof: bool,
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.pending.len() {
            match self.rx.recv_timeout(self.poll) {
                Ok(block) => (self.pending, self.at) = (block?, 0),
                Err(RecvTimeoutError::Timeout) => return Ok(0),
                Err(RecvTimeoutError::Disconnected) => {
                    self.eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Most files one commit keeps open (one per table and hour its rows fall in); more, and the
/// commit is made early. Bounds the writers' memory when old logs span many hours.
const MAX_OPEN_FILES: usize = 32;

/// Takes parsed chunks as they come, puts them back in input order, and writes them into the
/// pending commit; makes the commit when it is big enough, old enough, or its source changes.
fn commit_in_order(
    parsed: &crossbeam_channel::Receiver<Parsed>,
    store: &mut Store,
    config: &CollectConfig,
    control: &Control,
    summary: &mut CollectSummary,
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
    // The source and offset the pending commit reaches, and when its first row came.
    let mut reached: Option<(Arc<Source>, u64)> = None;
    let mut since: Option<Instant> = None;
    loop {
        let received = match since {
            Some(t) => parsed.recv_deadline(t + config.commit_every),
            None => parsed.recv().map_err(|_| RecvTimeoutError::Disconnected),
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
            if reached.as_ref().is_some_and(|(source, _)| !Arc::ptr_eq(source, &chunk.source)) {
                // Each commit covers one source: the checkpoint names one position.
                pending = committer.commit(pending, &reached)?;
                since = None;
            }
            for batch in chunk.batches {
                let (table, batch) = match batch {
                    TableBatch::AccessLog(b) => {
                        committer.summary.records += b.num_rows();
                        (ACCESS_LOG, b)
                    }
                    TableBatch::Rejects(b) => {
                        committer.summary.rejects += b.num_rows();
                        (REJECTS, b)
                    }
                };
                pending.write(table, &batch)?;
            }
            reached = Some((chunk.source, chunk.end_offset));
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
    /// Commits `pending` as reaching `reached`, and returns the next pending commit.
    fn commit(
        &mut self,
        pending: PendingCommit,
        reached: &Option<(Arc<Source>, u64)>,
    ) -> Result<PendingCommit, StoreError> {
        let Some((source, offset)) = reached else { return Ok(pending) };
        let checkpoint = Checkpoint { source: source.id.clone(), offset: *offset };
        let written = self.store.finish(pending, &checkpoint, source.path.as_deref())?;
        self.summary.commits += usize::from(written.files > 0);
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
